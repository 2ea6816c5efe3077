// Helpers shared by every page of the observatory UI (plain JavaScript, no build step).
"use strict";

const Observatory = (() => {
  // A stable colour per service name, the same on every page.
  const PALETTE = ["#3b6fd8", "#d9822b", "#2e9e6b", "#c2417a", "#7a52c7", "#1f9bb0", "#c9a100", "#5b7b2b",
                   "#d1495b", "#4a5bb5", "#8c6d46", "#2f8f8f"];

  function colour(service) {
    let hash = 0;
    for (const ch of String(service)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return PALETTE[hash % PALETTE.length];
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  function escapeHTML(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function duration(us) {
    if (us < 1000) return `${Math.round(us)}µs`;
    if (us < 1e6) return `${(us / 1000).toPrecision(3)}ms`;
    return `${(us / 1e6).toPrecision(3)}s`;
  }

  return { colour, getJSON, escapeHTML, duration };
})();

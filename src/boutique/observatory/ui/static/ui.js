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

  // A log record's severity level by its OTLP number (1-4 TRACE … 21-24 FATAL), else by its text.
  const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"];
  function severityLevel(record) {
    const number = Number(record.severityNumber) || 0;
    if (number > 0) return LEVELS[Math.min(LEVELS.length - 1, Math.floor((number - 1) / 4))];
    const text = String(record.severity || "").toLowerCase();
    return LEVELS.find((name) => text.startsWith(name)) || "unset";
  }

  return { colour, getJSON, escapeHTML, duration, severityLevel };
})();

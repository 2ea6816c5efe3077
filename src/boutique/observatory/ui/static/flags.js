// The Flags page: switch a flag through the JSON API, and keep every row current (a change made with
// `boutique flags` or in another tab shows up within a few seconds).
"use strict";

(() => {
  const table = document.getElementById("flags");
  if (!table) return;
  const status = document.getElementById("flags-status");
  const updated = document.getElementById("flags-updated");
  const resetAll = document.getElementById("reset-all");
  const every = Number(table.dataset.refreshMs) || 3000;
  let changes = 0; // changes sent: a refresh that overlapped one may show the state before it

  function say(text, isError = false) {
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  // How long ago, as the server writes it (timefmt.ago).
  function ago(seconds) {
    const s = Math.floor(seconds);
    if (s < 1) return "just now";
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (s >= size) return `${Math.floor(s / size)}${unit} ago`;
    }
    return `${s}s ago`;
  }

  function settingText(flag) {
    const text = flag.rule ? `${flag.variant} when ${flag.rule}` : flag.variant;
    return flag.enabled ? text : `${text} (disabled)`;
  }

  function rowOf(name) {
    return [...table.tBodies[0].rows].find((row) => row.dataset.flag === name) || null;
  }

  function show(flag) {
    const row = rowOf(flag.name);
    if (!row) return false;
    row.classList.toggle("changed", !flag.isDefault);
    row.querySelector('[data-role="setting"]').textContent = settingText(flag);
    const toggle = row.querySelector('[data-role="toggle"]');
    if (toggle) {
      const on = flag.variant === "on";
      toggle.setAttribute("aria-pressed", String(on));
      toggle.textContent = on ? "Turn off" : "Turn on";
    }
    const select = row.querySelector('[data-role="variant"]');
    if (document.activeElement !== select && !select.dataset.picked) select.value = flag.variant;
    const changed = row.querySelector('[data-role="changed"]');
    const last = flag.lastChange;
    changed.textContent = last ? `${ago(Date.now() / 1000 - last.time)} by ${last.by}` : "never changed";
    changed.title = last ? new Date(last.time * 1000).toISOString().replace("T", " ").replace("Z", " UTC") : "";
    return true;
  }

  async function refresh() {
    const before = changes;
    try {
      const answer = await Observatory.getJSON("/api/flags");
      const names = answer.flags.map((flag) => flag.name);
      const shown = [...table.tBodies[0].rows].map((row) => row.dataset.flag);
      if (names.join() !== shown.join()) {
        window.location.reload(); // flags were added or removed in the file: draw the table again
        return;
      }
      if (before !== changes) return;
      answer.flags.forEach(show);
      updated.textContent = new Date().toISOString().slice(11, 19) + " UTC";
      if (status.classList.contains("error") && status.dataset.stale) say("");
    } catch (error) {
      say(`Could not read the flags: ${error.message}`, true);
      status.dataset.stale = "1";
    }
  }

  async function send(method, path, body) {
    changes += 1;
    try {
      const response = await fetch(path, {
        method,
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
      return answer;
    } finally {
      changes += 1;
    }
  }

  async function setVariant(name, variant) {
    say(`Setting ${name} to ${variant}…`);
    try {
      const answer = await send("PUT", `/api/flags/${encodeURIComponent(name)}`, { variant });
      const select = rowOf(name).querySelector('[data-role="variant"]');
      delete select.dataset.picked;
      show(answer.flag);
      say(`${name} is now ${settingText(answer.flag)}.`);
    } catch (error) {
      say(`${name} not changed: ${error.message}`, true);
    }
  }

  table.addEventListener("change", (event) => {
    if (event.target.matches('[data-role="variant"]')) event.target.dataset.picked = "1";
  });

  table.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const row = button.closest("tr");
    const name = row.dataset.flag;
    if (button.dataset.role === "toggle") {
      setVariant(name, button.getAttribute("aria-pressed") === "true" ? "off" : "on");
    } else if (button.dataset.role === "apply") {
      setVariant(name, row.querySelector('[data-role="variant"]').value);
    }
  });

  resetAll.addEventListener("click", async () => {
    say("Resetting every flag…");
    try {
      const answer = await send("POST", "/api/flags/reset");
      for (const row of table.tBodies[0].rows) delete row.querySelector('[data-role="variant"]').dataset.picked;
      answer.flags.forEach(show);
      const count = answer.changes.length;
      say(count ? `Reset ${count} flag${count === 1 ? "" : "s"}: every flag is as shipped.` : "Every flag was already as shipped.");
    } catch (error) {
      say(`Nothing reset: ${error.message}`, true);
    }
  });

  refresh();
  window.setInterval(refresh, every);
})();

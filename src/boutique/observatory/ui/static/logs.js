// The Logs page: ask `/api/logs` with the form's parameters (prepared by the server), draw the records newest
// first, expand one to its attributes and resource, and with the live tail add each new record at the top.
"use strict";

(() => {
  const table = document.getElementById("logs");
  if (!table) return;
  const heading = document.getElementById("logs-heading");
  const apiError = document.getElementById("logs-api-error");
  const empty = document.getElementById("logs-empty");
  const toggle = document.getElementById("live-tail");
  const tailStatus = document.getElementById("tail-status");
  const maxRows = Number(table.dataset.maxRows) || 1000;
  const limit = Number(new URLSearchParams(table.dataset.query).get("limit")) || 0;
  const esc = Observatory.escapeHTML;
  const keys = new Map(); // record key → its <tbody>, so a record shown once is not shown twice
  let found = 0; // records the search found
  let added = 0; // records the live tail added
  let source = null;

  function iso(us) {
    const date = new Date(Math.floor(us / 1000));
    return `${date.toISOString().slice(0, 23)}${String(Math.floor(us % 1000)).padStart(3, "0")}Z`;
  }

  function clock(us) {
    const text = iso(us);
    const today = new Date().toISOString().slice(0, 10);
    return text.slice(0, 10) === today ? text.slice(11, 23) : `${text.slice(5, 10)} ${text.slice(11, 23)}`;
  }

  function valueText(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function pairs(values, what) {
    const names = Object.keys(values || {}).sort();
    if (!names.length) return `<p class="muted">No ${what}.</p>`;
    const rows = names.map((name) => `<tr><td>${esc(name)}</td><td>${esc(valueText(values[name]))}</td></tr>`);
    return `<table class="data kv"><thead><tr><th scope="col">Key</th><th scope="col">Value</th></tr></thead>`
      + `<tbody>${rows.join("")}</tbody></table>`;
  }

  function traceHref(record) {
    const span = record.spanID ? `?span=${encodeURIComponent(record.spanID)}` : "";
    return `/trace/${encodeURIComponent(record.traceID)}${span}`;
  }

  function detailHTML(record) {
    const facts = [
      ["Time", `<span class="mono">${esc(iso(record.time))}</span>`],
      ["Observed", record.observedTime ? `<span class="mono">${esc(iso(record.observedTime))}</span>` : ""],
      ["Service", esc(record.service)],
      ["Instance", esc(record.instance || "")],
      ["Severity", `${esc(record.severity || "")} <span class="muted">(${esc(record.severityNumber ?? 0)})</span>`],
      ["Scope", esc(record.scope || "")],
      ["Trace ID", record.traceID ? `<a class="mono" href="${traceHref(record)}">${esc(record.traceID)}</a>` : ""],
      ["Span ID", record.spanID ? `<span class="mono">${esc(record.spanID)}</span>` : ""],
    ].filter(([, value]) => value);
    return `<dl class="log-facts">${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>`
      + `<h3>Body</h3><pre class="log-body-full">${esc(record.body)}</pre>`
      + `<div class="log-tables"><section><h3>Attributes (${Object.keys(record.attributes || {}).length})</h3>`
      + `${pairs(record.attributes, "attributes")}</section>`
      + `<section><h3>Resource</h3>${pairs(record.resource, "resource attributes")}</section></div>`;
  }

  function recordKey(record) {
    return JSON.stringify([record.time, record.service, record.instance, record.spanID, record.body]);
  }

  // One record as a <tbody>: its line, and its details (drawn when first opened).
  function recordElement(record, fresh) {
    const sev = Observatory.severityLevel(record);
    const group = document.createElement("tbody");
    group.className = `record sev-${sev}${fresh ? " fresh" : ""}`;
    group.dataset.service = record.service;
    group.dataset.severity = record.severity || "";
    group.dataset.traceId = record.traceID || "";
    group.dataset.spanId = record.spanID || "";
    const trace = record.traceID
      ? `<a class="trace-link mono" href="${traceHref(record)}" title="Open trace ${esc(record.traceID)}`
        + `${record.spanID ? ` at span ${esc(record.spanID)}` : ""}">${esc(record.traceID.slice(0, 8))}</a>`
      : "";
    group.innerHTML = `<tr class="log-line">`
      + `<td class="l-time mono"><button type="button" class="expand" aria-expanded="false" `
      + `aria-label="Show the record's attributes and resource">▸</button>`
      + `<time datetime="${esc(iso(record.time))}" title="${esc(iso(record.time))}">${esc(clock(record.time))}</time></td>`
      + `<td class="l-service"><span class="swatch" style="background:${Observatory.colour(record.service)}"></span>`
      + `${esc(record.service)}</td>`
      + `<td><span class="sev sev-${sev}">${esc(record.severity || "—")}</span></td>`
      + `<td class="l-body">${esc(record.body)}</td><td>${trace}</td></tr>`
      + `<tr class="log-detail" hidden><td colspan="5"></td></tr>`;
    group.record = record;
    return group;
  }

  function add(records, atTop) {
    const fragment = document.createDocumentFragment();
    let count = 0;
    for (const record of records) {
      const key = recordKey(record);
      if (keys.has(key)) continue;
      const element = recordElement(record, atTop);
      keys.set(key, element);
      if (atTop) fragment.prepend(element);
      else fragment.append(element);
      count += 1;
    }
    if (atTop) table.querySelector("thead").after(fragment);
    else table.append(fragment);
    const groups = table.tBodies;
    while (groups.length > maxRows) {
      const last = groups[groups.length - 1];
      keys.delete(recordKey(last.record));
      last.remove();
    }
    return count;
  }

  function showCount() {
    const shown = table.tBodies.length;
    let text = `${shown} record${shown === 1 ? "" : "s"}`;
    if (added) text += ` (${added} from the live tail)`;
    else if (limit && found >= limit) text += " (the limit: raise it to see more)";
    heading.textContent = text;
    empty.hidden = shown > 0;
    table.hidden = shown === 0;
  }

  async function search() {
    try {
      const response = await fetch(`/api/logs?${table.dataset.query}`, { headers: { Accept: "application/json" } });
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        const message = body && body.errors && body.errors[0] ? body.errors[0].msg : `HTTP ${response.status}`;
        throw new Error(message);
      }
      found = body.data.length;
      add(body.data, false);
      apiError.hidden = true;
    } catch (error) {
      apiError.innerHTML = `<strong>Cannot search.</strong> ${esc(error.message)}`;
      apiError.hidden = false;
    }
    showCount();
    table.dataset.ready = "true";
  }

  function startTail() {
    stopTail();
    tailStatus.textContent = "Connecting…";
    source = new EventSource(`/api/logs/tail?${table.dataset.tail}`);
    source.onopen = () => {
      tailStatus.textContent = "Live: new records appear at the top.";
      table.dataset.tailing = "true";
    };
    source.onmessage = (event) => {
      let record;
      try {
        record = JSON.parse(event.data);
      } catch {
        return;
      }
      added += add([record], true);
      showCount();
    };
    source.onerror = () => {
      if (source && source.readyState === EventSource.CLOSED) {
        tailStatus.textContent = "The live tail stopped (the server refused it); turn it off and on to retry.";
        delete table.dataset.tailing;
      } else {
        tailStatus.textContent = "The live tail lost its connection; reconnecting…";
      }
    };
  }

  function stopTail() {
    if (source) source.close();
    source = null;
    delete table.dataset.tailing;
    tailStatus.textContent = "";
  }

  function rememberTail(on) {
    const url = new URL(window.location.href);
    if (on) url.searchParams.set("tail", "1");
    else url.searchParams.delete("tail");
    history.replaceState(null, "", url);
  }

  toggle.addEventListener("change", () => {
    if (toggle.checked) startTail();
    else stopTail();
    rememberTail(toggle.checked);
  });

  table.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    const line = event.target.closest("tr.log-line");
    if (!line) return;
    if (!event.target.closest(".expand") && window.getSelection().toString()) return; // selecting text
    const group = line.parentElement;
    const button = line.querySelector(".expand");
    const detail = group.querySelector("tr.log-detail");
    const open = detail.hidden;
    if (open && !detail.firstElementChild.innerHTML) detail.firstElementChild.innerHTML = detailHTML(group.record);
    detail.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    button.textContent = open ? "▾" : "▸";
    group.classList.toggle("open", open);
  });

  window.addEventListener("pagehide", stopTail);
  if (toggle.checked) startTail();
  search();
})();

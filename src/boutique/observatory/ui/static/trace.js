// The trace page: a virtualised waterfall (only rows near the viewport exist), find-in-trace, span details.
// The server sends the spans once, depth first with depths, counts and critical-path flags (trace.py).
"use strict";

(() => {
  const ROW = 26; // px, the same as --wf-row in trace.css
  const OVERSCAN = 10; // rows drawn above and below the viewport
  const STATUS = ["unset", "ok", "error"];

  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const waterfall = document.getElementById("waterfall");
  const grid = document.getElementById("waterfall-grid");
  const scroller = document.getElementById("waterfall-scroll");
  const layer = document.getElementById("waterfall-rows");
  const head = waterfall.querySelector(".wf-head");
  const detail = document.getElementById("span-detail");
  const findInput = document.getElementById("trace-find");
  const findCount = document.getElementById("trace-find-count");
  const criticalToggle = document.getElementById("trace-critical");
  const esc = Observatory.escapeHTML;
  const fmt = Observatory.duration;

  // ---- the spans, as objects ---------------------------------------------------------------------
  const column = Object.fromEntries(data.fields.map((name, i) => [name, i]));
  const c = column;
  const spans = data.spans.map((r, index) => ({
    index, id: r[c.id], parent: r[c.parent], orphanOf: r[c.orphanOf], depth: r[c.depth], service: r[c.service],
    operation: r[c.operation], kind: r[c.kind], start: r[c.start], duration: r[c.duration], status: r[c.status],
    message: r[c.message], critical: r[c.critical], children: r[c.children], descendants: r[c.descendants],
    instance: r[c.instance], resource: r[c.resource], scope: r[c.scope], attributes: r[c.attributes],
    events: r[c.events], links: r[c.links], warnings: r[c.warnings],
  }));
  const byId = new Map(spans.map((span) => [span.id, span]));
  const colours = data.services.map((service) => Observatory.colour(service));
  const total = Math.max(data.duration, 1);
  const segments = new Map(); // span index → critical-path segments [[start, end], …]
  for (const [index, start, end] of data.critical) {
    if (!segments.has(index)) segments.set(index, []);
    segments.get(index).push([start, end]);
  }
  const percent = (us) => `${((100 * us) / total).toFixed(3)}%`;

  for (const swatch of document.querySelectorAll(".swatch[data-service]")) {
    swatch.style.background = Observatory.colour(swatch.dataset.service);
  }

  // ---- state ----------------------------------------------------------------------------------
  const collapsed = new Uint8Array(spans.length);
  let visible = []; // span indexes in display order
  let position = new Int32Array(spans.length); // span index → display position, -1 when hidden
  let matches = null; // Uint8Array of matching spans while finding, else null
  let matchList = [];
  let current = -1; // position in matchList of the match jumped to
  let selected = -1; // span shown in the detail panel
  let active = 0; // span whose row takes the keyboard focus (roving tabindex)
  let haystacks = null;
  const drawn = new Map(); // span index → row element currently in the DOM

  function computeVisible() {
    visible = [];
    position = new Int32Array(spans.length).fill(-1);
    for (let i = 0; i < spans.length; i += 1) {
      position[i] = visible.length;
      visible.push(i);
      if (collapsed[i]) i += spans[i].descendants;
    }
    layer.style.height = `${visible.length * ROW}px`;
    grid.setAttribute("aria-rowcount", String(visible.length + 1));
    waterfall.dataset.visibleRows = String(visible.length);
    if (position[active] < 0) active = ancestorShown(active);
  }

  function ancestorShown(index) {
    let at = index;
    while (at >= 0 && position[at] < 0) at = spans[at].parent;
    return at < 0 ? visible[0] : at;
  }

  // ---- drawing --------------------------------------------------------------------------------
  function rowHTML(span) {
    const colour = colours[span.service];
    const indent = Math.min(span.depth, 30) * 14 + 4;
    const toggle = span.children
      ? `<button type="button" class="wf-toggle" aria-expanded="${!collapsed[span.index]}" tabindex="-1"
           aria-label="${collapsed[span.index] ? "Expand" : "Collapse"} ${esc(span.operation)}">${collapsed[span.index] ? "▸" : "▾"}</button>`
      : '<span class="wf-toggle-space"></span>';
    const error = span.status === 2 ? '<span class="wf-err" role="img" aria-label="error" title="error">!</span>' : "";
    const kids = span.children && collapsed[span.index]
      ? `<span class="badge wf-kids" title="hidden descendants">${span.descendants}</span>` : "";
    let critical = "";
    for (const [start, end] of segments.get(span.index) || []) {
      critical += `<div class="wf-cp" style="left:${percent(start)};width:${percent(end - start)}"></div>`;
    }
    const name = `${esc(data.services[span.service])} ${esc(span.operation)}`;
    return `<div class="wf-name" role="gridcell" title="${name}" style="padding-left:${indent}px">${toggle}`
      + `<span class="swatch" style="background:${colour}"></span>`
      + `<span class="wf-service">${esc(data.services[span.service])}</span>`
      + `<span class="wf-op">${esc(span.operation)}</span>${error}${kids}</div>`
      + `<div class="wf-time" role="gridcell"><div class="wf-bar" style="left:${percent(span.start)};`
      + `width:${percent(span.duration)};background:${colour}"></div>${critical}`
      + `<span class="wf-label" style="left:${percent(span.start + span.duration)}">${fmt(span.duration)}</span></div>`;
  }

  function makeRow(index) {
    const span = spans[index];
    const row = document.createElement("div");
    let classes = "wf-row";
    if (span.critical) classes += " critical";
    if (span.status === 2) classes += " error";
    if (matches && matches[index]) classes += " match";
    if (current >= 0 && matchList[current] === index) classes += " current";
    if (selected === index) classes += " selected";
    row.className = classes;
    row.setAttribute("role", "row");
    row.setAttribute("aria-level", String(span.depth + 1));
    row.setAttribute("aria-rowindex", String(position[index] + 2)); // row 1 is the header
    row.setAttribute("aria-selected", String(selected === index));
    row.tabIndex = index === active ? 0 : -1;
    row.dataset.index = String(index);
    row.dataset.spanId = span.id;
    if (span.critical) row.dataset.critical = "true";
    row.style.top = `${position[index] * ROW}px`;
    row.innerHTML = rowHTML(span);
    if (index === active) {
      const button = row.querySelector(".wf-toggle");
      if (button) button.tabIndex = 0;
    }
    return row;
  }

  function range() {
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(visible.length, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW) + OVERSCAN);
    return [first, last];
  }

  // Draw the rows in range; with `fresh` every row is redrawn (after a state change), keeping focus.
  function draw(fresh = false) {
    const focused = document.activeElement;
    const focusRow = focused && layer.contains(focused) ? Number(focused.closest(".wf-row").dataset.index) : -1;
    const focusToggle = focused && focused.classList && focused.classList.contains("wf-toggle");
    const [first, last] = range();
    const wanted = new Set(visible.slice(first, last));
    if (focusRow >= 0 && position[focusRow] >= 0) wanted.add(focusRow);
    for (const [index, row] of drawn) {
      if (fresh || !wanted.has(index)) {
        row.remove();
        drawn.delete(index);
      }
    }
    const fragment = document.createDocumentFragment();
    for (const index of wanted) {
      if (!drawn.has(index)) {
        const row = makeRow(index);
        drawn.set(index, row);
        fragment.appendChild(row);
      }
    }
    layer.appendChild(fragment);
    if (focusRow >= 0 && drawn.has(focusRow)) {
      const row = drawn.get(focusRow);
      const target = (focusToggle && row.querySelector(".wf-toggle")) || row;
      if (document.activeElement !== target) target.focus({ preventScroll: true });
    }
  }

  let pending = false;
  function drawSoon() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  }

  function alignHead() {
    head.style.paddingRight = `${scroller.offsetWidth - scroller.clientWidth}px`;
  }

  // ---- moving around --------------------------------------------------------------------------
  function scrollToPosition(pos, center = false) {
    const top = pos * ROW;
    const view = scroller.clientHeight;
    if (center) scroller.scrollTop = Math.max(0, top - view / 2 + ROW / 2);
    else if (top < scroller.scrollTop) scroller.scrollTop = top;
    else if (top + ROW > scroller.scrollTop + view) scroller.scrollTop = top + ROW - view;
  }

  function reveal(index) {
    let changed = false;
    for (let at = spans[index].parent; at >= 0; at = spans[at].parent) {
      if (collapsed[at]) {
        collapsed[at] = 0;
        changed = true;
      }
    }
    if (changed) computeVisible();
  }

  function activate(index, focus = true, center = false) {
    active = index;
    scrollToPosition(position[index], center);
    draw(true);
    if (focus && drawn.has(index)) drawn.get(index).focus({ preventScroll: true });
  }

  function setCollapsed(index, value) {
    if (!spans[index].children || Boolean(collapsed[index]) === value) return;
    collapsed[index] = value ? 1 : 0;
    computeVisible();
    draw(true);
  }

  function setAll(value) {
    for (const span of spans) collapsed[span.index] = value && span.children ? 1 : 0;
    computeVisible();
    draw(true);
  }

  // ---- details ----------------------------------------------------------------------------------
  function valueText(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function table(values, caption) {
    const keys = Object.keys(values || {}).sort();
    if (!keys.length) return `<p class="muted">No ${caption.toLowerCase()}.</p>`;
    const rows = keys.map((key) => `<tr><td>${esc(key)}</td><td>${esc(valueText(values[key]))}</td></tr>`);
    return `<table class="data kv"><caption class="muted" hidden>${esc(caption)}</caption>`
      + `<thead><tr><th scope="col">Key</th><th scope="col">Value</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }

  function spanButton(span) {
    return `<button type="button" class="linkish" data-goto="${span.index}">${esc(span.id)}</button>`
      + ` <span class="muted">${esc(data.services[span.service])}: ${esc(span.operation)}</span>`;
  }

  function eventsHTML(span) {
    if (!span.events.length) return '<p class="muted">No events.</p>';
    const length = Math.max(span.duration, 1);
    const marks = span.events.map(([at, name]) => {
      const left = Math.min(100, Math.max(0, (100 * at) / length)).toFixed(2);
      const kind = name === "exception" ? " exception" : "";
      return `<span class="event-mark${kind}" style="left:${left}%" title="${esc(name)} at ${esc(fmt(at))}"></span>`;
    });
    const items = span.events.map(([at, name, attributes]) => {
      const pairs = Object.keys(attributes).sort()
        .map((key) => `<dt>${esc(key)}</dt><dd>${esc(valueText(attributes[key]))}</dd>`).join("");
      return `<li><span class="at">+${esc(fmt(at))}</span><strong>${esc(name)}</strong>${pairs ? `<dl>${pairs}</dl>` : ""}</li>`;
    });
    return `<div class="event-line" aria-hidden="true">${marks.join("")}</div><ul class="events">${items.join("")}</ul>`;
  }

  function linksHTML(span) {
    if (!span.links.length) return '<p class="muted">No links.</p>';
    const items = span.links.map(([traceId, spanId, attributes]) => {
      const pairs = Object.keys(attributes).sort().map((k) => `${esc(k)}=${esc(valueText(attributes[k]))}`).join(", ");
      const href = `/trace/${encodeURIComponent(traceId)}?span=${encodeURIComponent(spanId)}`;
      return `<li><a class="mono" href="${href}">${esc(traceId)}</a> span <span class="mono">${esc(spanId)}</span>`
        + `${pairs ? ` <span class="muted">${pairs}</span>` : ""}</li>`;
    });
    return `<ul>${items.join("")}</ul>`;
  }

  // ---- the trace's logs: asked for once, shown in the details of the span each belongs to ------------
  const LOG_LIMIT = 1000;
  const logCount = document.getElementById("trace-log-count");
  const logsBySpan = new Map(); // span id → records, oldest first
  let logsState = "loading"; // loading, ready, or why they could not be read
  let logsTotal = 0;

  async function loadLogs() {
    try {
      const query = new URLSearchParams({ traceID: data.traceId, limit: String(LOG_LIMIT) });
      const body = await Observatory.getJSON(`/api/logs?${query}`);
      for (const record of body.data) {
        const key = record.spanID || "";
        if (!logsBySpan.has(key)) logsBySpan.set(key, []);
        logsBySpan.get(key).push(record);
      }
      for (const records of logsBySpan.values()) records.sort((a, b) => a.time - b.time);
      logsTotal = body.data.length;
      logsState = "ready";
      logCount.textContent = `${logsTotal >= LOG_LIMIT ? `the newest ${LOG_LIMIT}` : logsTotal}`;
    } catch (error) {
      logsState = `could not be read (${error.message})`;
      logCount.textContent = "unknown";
    }
    if (selected >= 0) {
      const section = document.getElementById("span-logs");
      if (section) section.outerHTML = logsHTML(spans[selected]);
    }
    waterfall.dataset.logs = logsState === "ready" ? String(logsTotal) : "failed";
  }

  function logsHTML(span) {
    const records = logsBySpan.get(span.id) || [];
    const heading = logsState === "ready" ? `Logs (${records.length})` : "Logs";
    let content;
    if (logsState === "loading") content = '<p class="muted">Loading…</p>';
    else if (logsState !== "ready") content = `<p class="muted">The logs ${esc(logsState)}.</p>`;
    else if (!records.length) content = '<p class="muted">No logs of this span.</p>';
    else {
      const spanStart = data.start + span.start;
      const items = records.map((record) => {
        const offset = record.time - spanStart;
        const at = offset < 0 ? `−${fmt(-offset)}` : `+${fmt(offset)}`;
        const level = Observatory.severityLevel(record);
        return `<li data-severity="${esc(record.severity || "")}"><span class="at">${esc(at)}</span>`
          + `<span class="sev sev-${level}">${esc(record.severity || "—")}</span>`
          + `<span class="body">${esc(record.body)}</span></li>`;
      });
      const query = new URLSearchParams({ traceID: data.traceId, spanID: span.id });
      content = `<ul class="span-logs">${items.join("")}</ul>`
        + `<p><a href="/logs?${query}">These logs on the Logs page</a></p>`;
    }
    return `<section id="span-logs" aria-label="${esc(heading)}"><h3>${esc(heading)}</h3>${content}</section>`;
  }

  // The span's stack samples on the Profiles page (the samples each process took while the span ran).
  function profileHTML(span) {
    const query = new URLSearchParams({ traceID: data.traceId, spanID: span.id, service: data.services[span.service] });
    return `<p class="span-profile"><a id="span-profile-link" href="/profiles?${query}">Profile of this span</a>`
      + ' <span class="muted">(stack samples taken while it ran)</span></p>';
  }

  function showDetail(index) {
    const span = spans[index];
    selected = index;
    const parent = span.parent >= 0 ? spanButton(spans[span.parent])
      : span.orphanOf ? `<span class="mono">${esc(span.orphanOf)}</span> <span class="muted">`
        + `(${byId.has(span.orphanOf) ? "see warnings" : "not in this trace"})</span>`
        : '<span class="muted">none (root)</span>';
    const status = STATUS[span.status] || String(span.status);
    const statusText = span.status === 2 ? `<span class="badge error">${status}</span>` : esc(status);
    const facts = [
      ["Service", `<span class="swatch" style="background:${colours[span.service]}"></span>${esc(data.services[span.service])}`],
      ["Instance", esc(data.instances[span.instance]) || '<span class="muted">unknown</span>'],
      ["Span ID", `<span class="mono">${esc(span.id)}</span>`],
      ["Parent", parent],
      ["Kind", esc(data.kinds[String(span.kind)] || String(span.kind))],
      ["Start", `+${esc(fmt(span.start))}`],
      ["Duration", esc(fmt(span.duration))],
      ["Status", `${statusText}${span.message ? ` ${esc(span.message)}` : ""}`],
      ["Critical path", span.critical ? "yes" : "no"],
      ["Children", `${span.children}${span.descendants > span.children ? ` (${span.descendants} below)` : ""}`],
    ];
    if (data.scopes[span.scope]) facts.push(["Scope", esc(data.scopes[span.scope])]);
    const warnings = span.warnings.length
      ? `<h3>Warnings</h3><ul class="warnings">${span.warnings.map((w) => `<li>${esc(w)}</li>`).join("")}</ul>` : "";
    detail.innerHTML = `<div class="detail-head"><h2 id="span-detail-title">${esc(span.operation)}</h2>`
      + '<button type="button" class="plain" id="span-detail-close" aria-label="Close span details">✕</button></div>'
      + `<dl class="detail-facts">${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>${warnings}`
      + `<h3>Attributes (${Object.keys(span.attributes).length})</h3>${table(span.attributes, "Attributes")}`
      + logsHTML(span)
      + profileHTML(span)
      + `<h3>Events (${span.events.length})</h3>${eventsHTML(span)}`
      + `<h3>Links (${span.links.length})</h3>${linksHTML(span)}`
      + `<h3>Resource</h3>${table(data.resources[span.resource], "Resource attributes")}`;
    detail.dataset.spanId = span.id;
    detail.hidden = false;
    alignHead();
    draw(true);
  }

  function closeDetail() {
    detail.hidden = true;
    selected = -1;
    alignHead();
    draw(true);
    if (drawn.has(active)) drawn.get(active).focus();
  }

  function open(index, focus = true) {
    reveal(index);
    showDetail(index);
    activate(index, focus, true);
  }

  // ---- find in trace ----------------------------------------------------------------------------
  function haystack(span) {
    const parts = [span.operation, data.services[span.service], span.id];
    for (const [key, value] of Object.entries(span.attributes)) parts.push(key, valueText(value));
    return parts.join("\n").toLowerCase();
  }

  let found = ""; // the text the matches are for
  function find() {
    const text = findInput.value.trim().toLowerCase();
    found = text;
    current = -1;
    if (!text) {
      matches = null;
      matchList = [];
      findCount.textContent = "";
      waterfall.classList.remove("finding");
    } else {
      haystacks = haystacks || spans.map(haystack);
      matches = new Uint8Array(spans.length);
      matchList = [];
      for (let i = 0; i < spans.length; i += 1) {
        if (haystacks[i].includes(text)) {
          matches[i] = 1;
          matchList.push(i);
        }
      }
      waterfall.classList.add("finding");
      findCount.textContent = matchList.length ? `0 of ${matchList.length}` : "no matches";
    }
    waterfall.dataset.matches = String(matchList.length);
    draw(true);
  }

  function step(direction) {
    if (!matchList.length) return;
    current = (current + direction + matchList.length) % matchList.length;
    findCount.textContent = `${current + 1} of ${matchList.length}`;
    open(matchList[current], false);
  }

  let findTimer = 0;
  findInput.addEventListener("input", () => {
    clearTimeout(findTimer);
    findTimer = setTimeout(find, spans.length > 2000 ? 150 : 0);
  });
  findInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      clearTimeout(findTimer);
      if (findInput.value.trim().toLowerCase() !== found) find();
      step(event.shiftKey ? -1 : 1);
    } else if (event.key === "Escape") {
      findInput.value = "";
      find();
    }
  });
  document.getElementById("trace-find-next").addEventListener("click", () => step(1));
  document.getElementById("trace-find-previous").addEventListener("click", () => step(-1));

  // ---- events -----------------------------------------------------------------------------------
  document.getElementById("trace-collapse-all").addEventListener("click", () => setAll(true));
  document.getElementById("trace-expand-all").addEventListener("click", () => setAll(false));
  criticalToggle.addEventListener("change", () => {
    waterfall.classList.toggle("no-critical", !criticalToggle.checked);
  });
  scroller.addEventListener("scroll", drawSoon, { passive: true });
  window.addEventListener("resize", () => {
    alignHead();
    drawSoon();
  });

  layer.addEventListener("click", (event) => {
    const row = event.target.closest(".wf-row");
    if (!row) return;
    const index = Number(row.dataset.index);
    if (event.target.closest(".wf-toggle")) {
      active = index;
      setCollapsed(index, !collapsed[index]);
      return;
    }
    active = index;
    showDetail(index);
    drawn.get(index).focus({ preventScroll: true });
  });

  layer.addEventListener("keydown", (event) => {
    const row = event.target.closest(".wf-row");
    if (!row || event.target.closest(".wf-toggle")) return; // buttons handle Enter and Space themselves
    const index = Number(row.dataset.index);
    const span = spans[index];
    const pos = position[index];
    const page = Math.max(1, Math.floor(scroller.clientHeight / ROW) - 1);
    const moveTo = (to) => activate(visible[Math.max(0, Math.min(visible.length - 1, to))]);
    switch (event.key) {
      case "ArrowDown": moveTo(pos + 1); break;
      case "ArrowUp": moveTo(pos - 1); break;
      case "PageDown": moveTo(pos + page); break;
      case "PageUp": moveTo(pos - page); break;
      case "Home": moveTo(0); break;
      case "End": moveTo(visible.length - 1); break;
      case "ArrowRight":
        if (span.children && collapsed[index]) setCollapsed(index, false);
        else if (span.children) moveTo(pos + 1);
        break;
      case "ArrowLeft":
        if (span.children && !collapsed[index]) setCollapsed(index, true);
        else if (span.parent >= 0) activate(span.parent);
        break;
      case "Enter":
      case " ":
        showDetail(index);
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  detail.addEventListener("click", (event) => {
    if (event.target.closest("#span-detail-close")) {
      closeDetail();
      return;
    }
    const goto = event.target.closest("[data-goto]");
    if (goto) open(Number(goto.dataset.goto));
  });
  detail.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeDetail();
  });

  // ---- start ------------------------------------------------------------------------------------
  computeVisible();
  alignHead();
  draw();
  const wanted = new URLSearchParams(window.location.search).get("span");
  if (wanted && byId.has(wanted)) open(byId.get(wanted).index, false);
  waterfall.dataset.ready = "true";
  loadLogs();
  window.traceReadyAt = performance.now();
})();

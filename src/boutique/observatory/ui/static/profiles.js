// The Profiles page: ask `/api/profiles` (or `/api/profiles/diff` against a base window) and
// `/api/profiles/top` with the parameters the server prepared, and draw the flame graph on one <canvas>:
// root at the top, callees below, a frame's width its share of the samples. The tree is flattened once
// into typed arrays in depth-first order; a draw walks only the frames at least a pixel wide (a narrower
// frame's whole subtree is skipped), so a profile of 100,000 samples draws as quickly as a small one.
// Hover shows a frame's numbers, a click zooms to it and lists the traces that spent most time in it,
// the search box highlights matching frames and tells their share of all samples.
"use strict";

(() => {
  const section = document.getElementById("profile");
  const form = document.getElementById("profiles-form");
  const compare = document.getElementById("p-compare");

  // The base window's fields matter only for a custom comparison.
  function showBaseFields() {
    const custom = compare && compare.value === "custom";
    for (const field of document.querySelectorAll(".base-field")) field.hidden = !custom;
  }
  if (compare) {
    compare.addEventListener("change", showBaseFields);
    showBaseFields();
  }
  // Another service has other instances and types: show its profile at once, on all of its instances.
  const service = document.getElementById("p-service");
  if (form && service) {
    service.addEventListener("change", () => {
      document.getElementById("p-instance").value = "";
      form.requestSubmit();
    });
  }
  if (!section) return;

  const ROW = 18; // px per stack level
  const FONT = "11.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
  const MATCH = "#c026d3";
  const query = section.dataset.query;
  const baseQuery = section.dataset.base;
  const diff = Boolean(baseQuery);
  const wrap = document.getElementById("flame-wrap");
  const canvas = document.getElementById("flame");
  const ctx = canvas.getContext("2d");
  const tip = document.getElementById("flame-tip");
  const heading = document.getElementById("profile-heading");
  const apiError = document.getElementById("profile-api-error");
  const empty = document.getElementById("profile-empty");
  const searchInput = document.getElementById("profile-search");
  const searchShare = document.getElementById("profile-search-share");
  const hiddenQ = document.getElementById("p-q");
  const resetButton = document.getElementById("profile-reset");
  const legend = document.getElementById("diff-legend");
  const topBody = document.querySelector("#top-functions tbody");
  const traces = document.getElementById("frame-traces");
  const tracesFrame = document.getElementById("frame-traces-frame");
  const tracesList = document.getElementById("frame-traces-list");
  const tracesStatus = document.getElementById("frame-traces-status");
  const esc = Observatory.escapeHTML;
  const timings = {};
  window.profileTimings = timings;

  // ---- the tree, flattened depth first: node i's subtree is i … end[i] - 1 -----------------------
  let count = 0;
  let names = [];
  let total, self, baseTotal, baseSelf, weight, left, end, parent, depth; // typed arrays, by node
  let rootTotal = 0;
  let baseRoot = 0;
  let unit = "";
  let maxDelta = 0;
  let lowered = null; // names in lower case, made on the first search
  const colours = []; // by node, made when first drawn

  function flatten(root) {
    const stackNodes = [root];
    const stackParents = [-1];
    const stackDepths = [0];
    const nodeNames = [];
    const t = [];
    const s = [];
    const bt = [];
    const bs = [];
    const up = [];
    const level = [];
    while (stackNodes.length) {
      const node = stackNodes.pop();
      const index = nodeNames.length;
      up.push(stackParents.pop());
      level.push(stackDepths.pop());
      nodeNames.push(node.name);
      t.push(node.total || 0);
      s.push(node.self || 0);
      bt.push(node.baseTotal || 0);
      bs.push(node.baseSelf || 0);
      const kids = node.children || [];
      for (let k = kids.length - 1; k >= 0; k -= 1) {
        stackNodes.push(kids[k]);
        stackParents.push(index);
        stackDepths.push(level[index] + 1);
      }
    }
    count = nodeNames.length;
    names = nodeNames;
    total = Float64Array.from(t);
    self = Float64Array.from(s);
    baseTotal = Float64Array.from(bt);
    baseSelf = Float64Array.from(bs);
    parent = Int32Array.from(up);
    depth = Uint16Array.from(level);
    rootTotal = total[0];
    baseRoot = diff ? baseTotal[0] : 0;
    // A frame's width: its total, or in a comparison its share of each window added up, so that a frame
    // present in only one of them is still drawn.
    weight = new Float64Array(count);
    for (let i = 0; i < count; i += 1) {
      weight[i] = diff ? share(total[i]) + baseShare(baseTotal[i]) : total[i];
    }
    const size = new Int32Array(count).fill(1);
    for (let i = count - 1; i > 0; i -= 1) size[parent[i]] += size[i];
    end = new Int32Array(count);
    left = new Float64Array(count);
    const next = new Float64Array(count); // where a node's next child starts
    for (let i = 0; i < count; i += 1) {
      end[i] = i + size[i];
      if (i > 0) {
        const p = parent[i];
        left[i] = left[p] + next[p];
        next[p] += weight[i];
      }
    }
    maxDelta = 0;
    if (diff) {
      for (let i = 1; i < count; i += 1) maxDelta = Math.max(maxDelta, Math.abs(delta(i)));
    }
    lowered = null;
    colours.length = 0;
  }

  const share = (value) => (rootTotal > 0 ? value / rootTotal : 0);
  const baseShare = (value) => (baseRoot > 0 ? value / baseRoot : 0);
  const delta = (i) => share(total[i]) - baseShare(baseTotal[i]);

  // ---- numbers as a person reads them ------------------------------------------------------------
  function amount(value) {
    if (unit === "nanoseconds") {
      if (value < 1e3) return `${Math.round(value)} ns`;
      if (value < 1e6) return `${(value / 1e3).toPrecision(3)} µs`;
      if (value < 1e9) return `${(value / 1e6).toPrecision(3)} ms`;
      return `${(value / 1e9).toPrecision(3)} s`;
    }
    return `${Math.round(value).toLocaleString("en")}${unit ? ` ${unit}` : ""}`;
  }

  const percent = (fraction) => `${(100 * fraction).toFixed(fraction < 0.001 && fraction > 0 ? 3 : 2)} %`;
  const points = (fraction) => `${fraction >= 0 ? "+" : "−"}${(100 * Math.abs(fraction)).toFixed(2)} pp`;

  // ---- colours -------------------------------------------------------------------------------------
  function hash(text) {
    let value = 0;
    for (let k = 0; k < text.length; k += 1) value = (value * 31 + text.charCodeAt(k)) >>> 0;
    return value;
  }

  // Warm colours: the hue by the frame's file (its module), the lightness varied by the function.
  function frameColour(i) {
    if (i === 0) return "#c9ced8";
    const name = names[i];
    const open = name.lastIndexOf(" (");
    const file = open > 0 ? name.slice(open) : name;
    const hue = 8 + (hash(file) % 44);
    const light = 58 + (hash(name) % 14);
    return `hsl(${hue}, 78%, ${light}%)`;
  }

  // Diff colours: red where the frame's share grew, green where it shrank, by how much against the largest change.
  function diffColour(i) {
    if (i === 0 || maxDelta <= 0) return "#d5d9e1";
    const change = delta(i) / maxDelta;
    const strength = Math.min(1, Math.abs(change));
    const [r, g, b] = change >= 0 ? [211, 47, 47] : [46, 160, 67];
    const mix = (from, to) => Math.round(from + (to - from) * strength);
    return `rgb(${mix(222, r)}, ${mix(225, g)}, ${mix(231, b)})`;
  }

  function colourOf(i) {
    let colour = colours[i];
    if (colour === undefined) {
      colour = diff ? diffColour(i) : frameColour(i);
      colours[i] = colour;
    }
    return colour;
  }

  // ---- state -----------------------------------------------------------------------------------
  let zoom = 0; // the node filling the width
  let matched = null; // Uint8Array of frames matching the search, or null
  let rowsNode = []; // per depth: the nodes drawn, left to right
  let rowsX = [];
  let rowsW = [];
  let drawnCount = 0;
  let hovered = -1;
  let charWidth = 7;

  // ---- layout: which frames are at least a pixel wide, where --------------------------------------
  function layout(width) {
    rowsNode = [];
    rowsX = [];
    rowsW = [];
    drawnCount = 0;
    const put = (i, px, pw) => {
      const d = depth[i];
      while (rowsNode.length <= d) {
        rowsNode.push([]);
        rowsX.push([]);
        rowsW.push([]);
      }
      rowsNode[d].push(i);
      rowsX[d].push(px);
      rowsW[d].push(pw);
      drawnCount += 1;
    };
    const chain = [];
    for (let a = parent[zoom]; a >= 0; a = parent[a]) chain.push(a);
    for (let k = chain.length - 1; k >= 0; k -= 1) put(chain[k], 0, width); // the zoomed frame's callers
    const x0 = left[zoom];
    const scale = weight[zoom] > 0 ? width / weight[zoom] : 0;
    put(zoom, 0, width);
    const last = end[zoom];
    let i = zoom + 1;
    while (i < last) {
      const pw = weight[i] * scale;
      if (pw < 1) {
        i = end[i]; // too narrow to see: so is everything it called
        continue;
      }
      put(i, (left[i] - x0) * scale, pw);
      i += 1;
    }
  }

  // ---- painting ----------------------------------------------------------------------------------
  function paint() {
    const started = performance.now();
    const style = getComputedStyle(wrap);
    const inner = wrap.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const width = Math.max(200, Math.floor(inner));
    layout(width);
    const height = rowsNode.length * ROW;
    const ratio = window.devicePixelRatio || 1;
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    charWidth = ctx.measureText("mmmmmmmmmm").width / 10;
    const zoomDepth = depth[zoom];
    for (let d = 0; d < rowsNode.length; d += 1) {
      const nodes = rowsNode[d];
      const xs = rowsX[d];
      const ws = rowsW[d];
      const y = d * ROW;
      for (let k = 0; k < nodes.length; k += 1) {
        const i = nodes[k];
        const px = xs[k];
        const pw = ws[k];
        const faded = (matched && !matched[i]) || d < zoomDepth;
        ctx.globalAlpha = faded ? 0.4 : 1;
        ctx.fillStyle = matched && matched[i] ? MATCH : colourOf(i);
        ctx.fillRect(px, y, pw > 3 ? pw - 1 : pw, ROW - 1);
        if (i === hovered) {
          ctx.globalAlpha = 1;
          ctx.strokeStyle = "#151b2b";
          ctx.strokeRect(px + 0.5, y + 0.5, Math.max(pw - 2, 1), ROW - 2);
        }
        const room = Math.floor((pw - 6) / charWidth);
        if (room >= 3) {
          const name = names[i];
          const text = name.length <= room ? name : `${name.slice(0, room - 1)}…`;
          ctx.globalAlpha = faded ? 0.55 : 1;
          ctx.fillStyle = matched && matched[i] ? "#fff" : "#1d2330";
          ctx.fillText(text, px + 3, y + ROW / 2);
        }
      }
    }
    ctx.globalAlpha = 1;
    canvas.setAttribute("aria-label", `Flame graph: ${drawnCount} frames drawn of ${count}`
      + `${zoom ? `, zoomed to ${names[zoom]}` : ""}. The top functions table below lists the same samples.`);
    section.dataset.frames = String(drawnCount);
    section.dataset.zoom = zoom ? names[zoom] : "";
    resetButton.disabled = zoom === 0;
    timings.paint = performance.now() - started;
  }

  let pending = false;
  function paintSoon() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      paint();
    });
  }

  // ---- finding the frame under the pointer -----------------------------------------------------
  function frameAt(x, y) {
    const d = Math.floor(y / ROW);
    if (d < 0 || d >= rowsNode.length) return -1;
    const xs = rowsX[d];
    const ws = rowsW[d];
    let lo = 0;
    let hi = xs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (x < xs[mid]) hi = mid - 1;
      else if (x >= xs[mid] + ws[mid]) lo = mid + 1;
      else return rowsNode[d][mid];
    }
    return -1;
  }

  function tipHTML(i) {
    const facts = [
      ["Total", `${amount(total[i])} <span class="muted">(${percent(share(total[i]))} of all)</span>`],
      ["Self", `${amount(self[i])} <span class="muted">(${percent(share(self[i]))} of all)</span>`],
    ];
    if (diff) {
      facts.push(["Base total", `${amount(baseTotal[i])} <span class="muted">(${percent(baseShare(baseTotal[i]))})</span>`]);
      facts.push(["Base self", `${amount(baseSelf[i])} <span class="muted">(${percent(baseShare(baseSelf[i]))})</span>`]);
      const change = delta(i);
      const kind = change > 0 ? "grew" : change < 0 ? "shrank" : "same";
      facts.push(["Change", `<span class="change ${kind}">${points(change)}</span> of all samples`]);
    }
    return `<strong class="mono">${esc(names[i])}</strong>`
      + `<dl>${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>`;
  }

  // The tooltip follows the pointer (fixed to the viewport, so no edge of the page cuts it off).
  function showTip(i, event) {
    tip.innerHTML = tipHTML(i);
    tip.hidden = false;
    const width = tip.offsetWidth;
    const height = tip.offsetHeight;
    const below = event.clientY + 16;
    tip.style.left = `${Math.max(4, Math.min(event.clientX + 14, window.innerWidth - width - 4))}px`;
    tip.style.top = `${below + height < window.innerHeight ? below : Math.max(4, event.clientY - height - 10)}px`;
  }

  function pointer(event) {
    const box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  canvas.addEventListener("mousemove", (event) => {
    const [x, y] = pointer(event);
    const i = frameAt(x, y);
    if (i !== hovered) {
      hovered = i;
      paintSoon();
    }
    canvas.style.cursor = i >= 0 ? "pointer" : "default";
    if (i >= 0) showTip(i, event);
    else tip.hidden = true;
  });
  canvas.addEventListener("mouseleave", () => {
    tip.hidden = true;
    if (hovered >= 0) {
      hovered = -1;
      paintSoon();
    }
  });
  canvas.addEventListener("click", (event) => {
    const [x, y] = pointer(event);
    const i = frameAt(x, y);
    if (i < 0) return;
    zoomTo(i);
  });
  canvas.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && zoom !== 0) {
      zoomTo(0);
      event.preventDefault();
    }
  });
  resetButton.addEventListener("click", () => zoomTo(0));

  function zoomTo(i) {
    zoom = i;
    tip.hidden = true;
    paint();
    if (i === 0) {
      traces.hidden = true;
      section.dataset.traces = "";
    } else {
      loadTraces(i);
    }
  }

  // ---- the traces that spent most time in a frame -------------------------------------------------
  let tracesAsked = 0;

  function traceHref(row) {
    return `/trace/${encodeURIComponent(row.traceID)}?span=${encodeURIComponent(row.spanID)}`;
  }

  async function loadTraces(i) {
    const asked = ++tracesAsked;
    const frame = names[i];
    traces.hidden = false;
    tracesFrame.textContent = frame;
    tracesList.innerHTML = "";
    tracesStatus.textContent = "Loading…";
    delete section.dataset.traces;
    try {
      const params = new URLSearchParams(query);
      params.set("frame", frame);
      params.set("limit", "20");
      const body = await getJSON(`/api/profiles/traces?${params}`);
      if (asked !== tracesAsked) return;
      const rows = body.data || [];
      tracesList.innerHTML = rows.map((row) => {
        const what = row.operation
          ? `${esc(row.service)}: ${esc(row.operation)}`
          : `${esc(row.service || "")} span <span class="mono">${esc(row.spanID)}</span>`;
        return `<li><a class="frame-trace" href="${traceHref(row)}" data-trace-id="${esc(row.traceID)}"`
          + ` data-span-id="${esc(row.spanID)}"><span class="swatch" style="background:${Observatory.colour(row.service || "")}">`
          + `</span>${what}</a> <span class="mono muted">${esc(row.traceID.slice(0, 8))}</span>`
          + ` <span class="value">${esc(amount(row.value))}</span></li>`;
      }).join("");
      tracesStatus.textContent = rows.length ? "" : "No sample in this frame was taken inside a span.";
      section.dataset.traces = String(rows.length);
    } catch (error) {
      if (asked !== tracesAsked) return;
      tracesStatus.textContent = `The traces could not be read: ${error.message}`;
      section.dataset.traces = "failed";
    }
  }

  // ---- search ------------------------------------------------------------------------------------
  function search() {
    const text = searchInput.value.trim().toLowerCase();
    if (hiddenQ) hiddenQ.value = searchInput.value.trim();
    const url = new URL(window.location.href);
    if (text) url.searchParams.set("q", searchInput.value.trim());
    else url.searchParams.delete("q");
    history.replaceState(null, "", url);
    if (!text) {
      matched = null;
      searchShare.textContent = "";
      section.dataset.matches = "";
      section.dataset.matchedShare = "";
      paint();
      return;
    }
    if (!lowered) lowered = names.map((name) => name.toLowerCase());
    matched = new Uint8Array(count);
    let frames = 0;
    for (let i = 1; i < count; i += 1) {
      if (lowered[i].includes(text)) {
        matched[i] = 1;
        frames += 1;
      }
    }
    // The share: frames that match with no matching caller, so a recursive function is counted once.
    let value = 0;
    let base = 0;
    let i = 1;
    while (i < count) {
      if (matched[i]) {
        value += total[i];
        base += baseTotal[i];
        i = end[i];
      } else {
        i += 1;
      }
    }
    const fraction = share(value);
    let text2 = frames ? `${frames} frame${frames === 1 ? "" : "s"}, ${percent(fraction)} of all samples` : "no frames match";
    if (diff && frames) text2 += ` (base window: ${percent(baseShare(base))})`;
    searchShare.textContent = text2;
    section.dataset.matches = String(frames);
    section.dataset.matchedShare = String(fraction);
    paint();
  }

  let searchTimer = 0;
  searchInput.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(search, count > 20000 ? 120 : 0);
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      clearTimeout(searchTimer);
      search();
    } else if (event.key === "Escape") {
      searchInput.value = "";
      search();
    }
  });

  // ---- the top functions -------------------------------------------------------------------------
  function showTop(rows) {
    topBody.innerHTML = rows.map((row) => `<tr><td><button type="button" class="top-name"`
      + ` data-name="${esc(row.name)}" title="Find this function in the flame graph">${esc(row.name)}</button></td>`
      + `<td class="num">${esc(amount(row.self))}</td><td class="num">${esc(percent(share(row.self)))}</td>`
      + `<td class="num">${esc(amount(row.total))}</td><td class="num">${esc(percent(share(row.total)))}</td></tr>`).join("")
      || '<tr><td colspan="5" class="muted">No functions.</td></tr>';
  }

  topBody.addEventListener("click", (event) => {
    const button = event.target.closest(".top-name");
    if (!button) return;
    searchInput.value = button.dataset.name;
    search();
    canvas.scrollIntoView({ block: "nearest" });
  });

  // ---- loading -----------------------------------------------------------------------------------
  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const message = body && body.errors && body.errors[0] ? body.errors[0].msg : `HTTP ${response.status}`;
      throw new Error(message);
    }
    return body;
  }

  function showLegend() {
    legend.hidden = false;
    document.getElementById("diff-legend-less").textContent = points(-maxDelta);
    document.getElementById("diff-legend-more").textContent = points(maxDelta);
  }

  // The tree first, alone (the server answers it sooner without a second query beside it); the top
  // functions are asked for once it has arrived, and fill their table after the flame graph is drawn.
  async function load() {
    const began = performance.now();
    const treePath = diff ? `/api/profiles/diff?${query}&${baseQuery}` : `/api/profiles?${query}`;
    let topAsked = null;
    let drawn = false;
    try {
      const tree = await getJSON(treePath);
      timings.fetch = performance.now() - began;
      topAsked = getJSON(`/api/profiles/top?${query}&limit=50`);
      topAsked.catch(() => {}); // read below, once the tree is drawn
      const flattening = performance.now();
      unit = tree.unit || "";
      flatten(tree.data || { name: "total", self: 0, total: 0, children: [] });
      timings.flatten = performance.now() - flattening;
      timings.nodes = count;
      const kinds = { cpu: "on-CPU time", wall: "wall-clock time", tasks: "asyncio task time" };
      const kind = Object.hasOwn(kinds, tree.type) ? kinds[tree.type] : tree.type;
      heading.textContent = diff
        ? `${amount(rootTotal)} of ${kind} sampled, against ${amount(baseRoot)} in the base window`
        : `${amount(rootTotal)} of ${kind} sampled`;
      const nothing = rootTotal <= 0 && baseRoot <= 0;
      empty.hidden = !nothing;
      wrap.hidden = nothing;
      if (!nothing) {
        if (diff) showLegend();
        if (searchInput.value.trim()) search();
        else paint();
      }
      apiError.hidden = true;
      drawn = true;
    } catch (error) {
      heading.textContent = "No profile";
      apiError.innerHTML = `<strong>Cannot show the profile.</strong> ${esc(error.message)}`;
      apiError.hidden = false;
      wrap.hidden = true;
    }
    section.dataset.ready = "true";
    window.profileDrawnAt = performance.now();
    if (!drawn || !topAsked) return;
    try {
      showTop((await topAsked).data || []);
      section.dataset.top = "ready";
    } catch (error) {
      topBody.innerHTML = `<tr><td colspan="5" class="error-text">The top functions could not be read: ${esc(error.message)}</td></tr>`;
      section.dataset.top = "failed";
    }
  }

  window.addEventListener("resize", () => {
    if (count) paintSoon();
  });
  load();
})();

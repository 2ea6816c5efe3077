// The Metrics page: pickers that reload the page as they change, and a window dragged out on the chart that
// leads to the traces in it (the search page with the service and the window's start and end, in µs).
"use strict";

(() => {
  for (const swatch of document.querySelectorAll(".swatch[data-service]")) {
    swatch.style.background = Observatory.colour(swatch.dataset.service);
  }

  // ---- the pickers ----------------------------------------------------------------------------------
  const form = document.getElementById("charts-form");
  if (form) {
    const value = (name) => (form.elements.namedItem(name) ? form.elements.namedItem(name).value : "");
    const go = (names) => {
      const query = new URLSearchParams();
      for (const name of names) if (value(name)) query.set(name, value(name));
      window.location.assign(`/charts?${query}`);
    };
    form.addEventListener("change", (event) => {
      const name = event.target.name;
      if (name === "service") go(["service", "lookback"]); // another service: its instruments differ
      else if (name === "name") go(["service", "name", "lookback", "start", "end"]); // another instrument: other labels
      else {
        if (name === "lookback") for (const hidden of form.querySelectorAll('input[type="hidden"]')) hidden.remove();
        form.requestSubmit();
      }
    });
  }

  // ---- a window on the chart ------------------------------------------------------------------------
  const box = document.getElementById("metric-chart");
  if (!box) return;
  const svg = box.querySelector("svg");
  const actions = document.getElementById("window-actions");
  const plot = {
    left: Number(svg.dataset.left), right: Number(svg.dataset.right),
    top: Number(svg.dataset.top), bottom: Number(svg.dataset.bottom),
    start: Number(svg.dataset.startUs), end: Number(svg.dataset.endUs),
  };
  const NS = "http://www.w3.org/2000/svg";
  const selection = document.createElementNS(NS, "rect");
  selection.setAttribute("class", "selection");
  selection.setAttribute("y", String(plot.top));
  selection.setAttribute("height", String(plot.bottom - plot.top));
  selection.setAttribute("visibility", "hidden");
  svg.appendChild(selection);
  let anchor = null; // x where the drag began, in SVG units

  function svgX(event) {
    const point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const inside = point.matrixTransform(svg.getScreenCTM().inverse());
    return Math.min(plot.right, Math.max(plot.left, inside.x));
  }

  function timeAt(x) {
    return Math.round(plot.start + ((x - plot.left) / (plot.right - plot.left)) * (plot.end - plot.start));
  }

  function clock(us) {
    return new Date(us / 1000).toISOString().slice(11, 19);
  }

  function mark(from, to) {
    selection.setAttribute("x", String(Math.min(from, to)));
    selection.setAttribute("width", String(Math.abs(to - from)));
    selection.setAttribute("visibility", "visible");
  }

  function clear() {
    selection.setAttribute("visibility", "hidden");
    actions.hidden = true;
    delete box.dataset.windowStart;
    delete box.dataset.windowEnd;
  }

  function offer(from, to) {
    const start = timeAt(Math.min(from, to));
    const end = timeAt(Math.max(from, to));
    const traces = new URLSearchParams({ service: box.dataset.service, start: String(start), end: String(end) });
    document.getElementById("window-traces").href = `/search?${traces}`;
    const zoom = new URL(box.dataset.page, window.location.href);
    zoom.searchParams.set("start", String(start));
    zoom.searchParams.set("end", String(end));
    document.getElementById("window-zoom").href = `${zoom.pathname}${zoom.search}`;
    document.getElementById("window-text").textContent = `${clock(start)} – ${clock(end)} UTC`;
    box.dataset.windowStart = String(start);
    box.dataset.windowEnd = String(end);
    actions.hidden = false;
  }

  svg.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || event.target.closest("a")) return; // an exemplar dot opens its trace
    event.preventDefault();
    anchor = svgX(event);
    svg.setPointerCapture(event.pointerId);
    mark(anchor, anchor);
  });
  svg.addEventListener("pointermove", (event) => {
    if (anchor !== null) mark(anchor, svgX(event));
  });
  svg.addEventListener("pointerup", (event) => {
    if (anchor === null) return;
    const to = svgX(event);
    const from = anchor;
    anchor = null;
    if (Math.abs(to - from) < 3) clear();
    else offer(from, to);
  });
  svg.addEventListener("pointercancel", () => {
    anchor = null;
    clear();
  });
  document.getElementById("window-clear").addEventListener("click", clear);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") clear();
  });
})();

// The Mesh page: draws each snapshot of /api/mesh/stream in place — instances per service, and a card
// per caller→dependency circuit breaker with its balancer's view of the dependency's instances.
"use strict";

(() => {
  const root = document.getElementById("mesh");
  if (!root) return;

  const SVG = "http://www.w3.org/2000/svg";
  const STALE_STREAM_MS = 5000;
  const STATE_WORDS = {
    CLOSED: "CLOSED", OPEN: "OPEN", HALF_OPEN: "HALF-OPEN", FORCED_OPEN: "FORCED OPEN",
    DISABLED: "DISABLED", NONE: "NO BREAKER",
  };
  const KNOWN_INSTANCE_FIELDS = new Set(["id", "endpoint", "outstanding", "ejected", "consecutive_failures"]);

  const lost = document.getElementById("stream-lost");
  const registryState = document.getElementById("registry-state");
  const registryProblem = document.getElementById("registry-problem");
  const lastUpdate = document.getElementById("last-update");
  const summary = document.getElementById("mesh-summary");
  const empty = document.getElementById("mesh-empty");
  const sections = new Map();
  let nextId = 0;
  let lastMessageAt = 0;

  // ---- small DOM and formatting helpers ----------------------------------------------------------

  function el(tag, attributes = {}, text = null) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== null) node.textContent = text;
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }

  // Put `nodes` into `container` in this order, moving only what is out of place (keeps focus).
  function arrange(container, nodes) {
    const wanted = new Set(nodes);
    for (const child of Array.from(container.children)) {
      if (!wanted.has(child)) child.remove();
    }
    const focused = document.activeElement;
    nodes.forEach((node, index) => {
      const here = container.children[index];
      if (here !== node) container.insertBefore(node, here || null);
    });
    if (focused && focused !== document.activeElement && document.contains(focused)) focused.focus();
  }

  function ms(value) {
    return Observatory.duration(value * 1000);
  }

  function rate(value) {
    return value < 10 ? value.toFixed(1) : String(Math.round(value));
  }

  function count(value) {
    return String(Math.round(value));
  }

  function pad(number) {
    return String(number).padStart(2, "0");
  }

  function clock(seconds) {
    const date = new Date(seconds * 1000);
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function uptime(startedAt, now) {
    const started = Date.parse(startedAt || "");
    if (Number.isNaN(started)) return "—";
    let left = Math.max(0, Math.floor(now - started / 1000));
    const days = Math.floor(left / 86400); left -= days * 86400;
    const hours = Math.floor(left / 3600); left -= hours * 3600;
    const minutes = Math.floor(left / 60);
    const seconds = left - minutes * 60;
    if (days) return `${days}d ${hours}h`;
    if (hours) return `${hours}h ${minutes}m`;
    if (minutes) return `${minutes}m ${seconds}s`;
    return `${seconds}s`;
  }

  function memory(bytes) {
    if (typeof bytes !== "number") return "—";
    const mb = bytes / 1048576;
    return mb >= 1024 ? `${(mb / 1024).toFixed(2)} GB` : `${mb.toFixed(mb < 10 ? 1 : 0)} MB`;
  }

  function mainPort(ports) {
    return ports.grpc || ports.http || Object.values(ports).find((p) => p !== ports.metrics) || ports.metrics;
  }

  // ---- one service: heading, instance table, breaker cards ---------------------------------------

  function makeSection(service) {
    const id = `mesh-service-${nextId++}`;
    const section = el("section", { class: "mesh-service panel", "aria-labelledby": id, "data-service": service });
    const heading = el("h2", { id });
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = Observatory.colour(service);
    const badge = el("span", { class: "badge" });
    heading.append(swatch, document.createTextNode(`${service} `), badge);
    const table = el("table", { class: "data instances" });
    const caption = el("caption", { class: "mesh-vh" }, `Instances of ${service}`);
    const head = el("thead");
    const headRow = el("tr");
    for (const label of ["Instance", "Address", "Status", "PID", "Version", "Uptime", "Memory (RSS)", "Status stream"]) {
      headRow.append(el("th", { scope: "col" }, label));
    }
    head.append(headRow);
    const body = el("tbody");
    table.append(caption, head, body);
    const cardsTitle = el("h3", { class: "mesh-vh" }, `Circuit breakers of ${service}`);
    const cards = el("div", { class: "cards" });
    const noCards = el("p", { class: "muted no-cards" });
    section.append(heading, table, cardsTitle, cards, noCards);
    return { section, badge, body, cards, noCards, rows: new Map(), cardViews: new Map() };
  }

  function makeRow() {
    const row = el("tr");
    const cells = {};
    for (const name of ["id", "address", "status", "pid", "version", "uptime", "memory", "stream"]) {
      cells[name] = el("td");
      row.append(cells[name]);
    }
    cells.id.className = "mono";
    cells.address.className = "mono";
    const badge = el("span", { class: "badge" });
    cells.status.append(badge);
    return { row, cells, badge };
  }

  function updateRow(view, process, now) {
    const { cells, badge } = view;
    setText(cells.id, process.id);
    const port = mainPort(process.ports);
    setText(cells.address, port ? `${process.address}:${port}` : process.address);
    setAttr(cells.address, "title", Object.entries(process.ports).map(([k, v]) => `${k} ${v}`).join(", "));
    setText(badge, process.status);
    setAttr(badge, "class", process.status === "passing" ? "badge ok" : "badge error");
    setText(cells.pid, process.pid || "—");
    setText(cells.version, process.version || "—");
    setText(cells.uptime, uptime(process.started_at, now));
    setText(cells.memory, memory(process.rss_bytes));
    setAttr(cells.memory, "title", typeof process.rss_bytes === "number" ? `${process.rss_bytes} bytes resident` : "not reported");
    let stream = "live";
    let trouble = false;
    if (!process.metrics) {
      stream = "no metrics port";
    } else if (!process.stream.connected) {
      stream = `reconnecting (${process.stream.error || "connecting"})`;
      trouble = true;
    }
    if (process.status_error) {
      stream += ` · status: ${process.status_error}`;
      trouble = true;
    }
    if (process.stale) stream += " · stale";
    setText(cells.stream, stream);
    setAttr(cells.stream, "class", trouble ? "error-text" : "muted");
  }

  // ---- one breaker card ----------------------------------------------------------------------------

  function makeCard() {
    const id = `mesh-card-${nextId++}`;
    const card = el("article", { class: "breaker-card", tabindex: "0" });
    const header = el("header");
    const title = el("h4", { class: "card-title" });
    const who = el("span", { class: "muted who mono" });
    header.append(title, who);
    const body = el("div", { class: "card-body" });
    const figure = el("div", { class: "rate-figure" });
    const svg = document.createElementNS(SVG, "svg");
    for (const [name, value] of Object.entries({ viewBox: "0 0 84 84", width: "84", height: "84", "aria-hidden": "true" })) {
      svg.setAttribute(name, value);
    }
    const circle = document.createElementNS(SVG, "circle");
    circle.setAttribute("cx", "42");
    circle.setAttribute("cy", "42");
    circle.setAttribute("r", "5");
    svg.append(circle);
    const pill = el("span", { class: "state-pill" });
    figure.append(svg, pill);
    const stats = el("dl", { class: "stats" });
    const fields = {};
    for (const [name, label] of [["error", "Errors"], ["rate", "Requests/s"], ["short", "Short-circuited"],
      ["p50", "Latency p50"], ["p99", "Latency p99"], ["flight", "In flight"]]) {
      const pair = el("div");
      fields[name] = el("dd");
      pair.append(el("dt", {}, label), fields[name]);
      stats.append(pair);
    }
    body.append(figure, stats);
    const balancer = el("div", { class: "balancer" });
    const balancerTitle = el("p", { class: "muted balancer-title" });
    const list = el("ul", { class: "endpoints" });
    balancer.append(balancerTitle, list);
    const more = el("button", { type: "button", class: "plain more", "aria-expanded": "false", "aria-controls": id }, "Details");
    const details = el("dl", { class: "details", id });
    details.hidden = true;
    more.addEventListener("click", () => {
      details.hidden = !details.hidden;
      more.setAttribute("aria-expanded", String(!details.hidden));
    });
    card.append(header, body, balancer, more, details);
    return { card, title, who, circle, pill, fields, balancerTitle, list, details, listKey: "", detailsKey: "" };
  }

  function endpointItem(instance) {
    const item = el("li");
    item.append(el("span", { class: "mono" }, instance.id || instance.endpoint));
    if (instance.endpoint && instance.endpoint !== instance.id) {
      item.append(" ", el("span", { class: "muted mono" }, instance.endpoint));
    }
    item.append(" ", el("span", { class: "badge" }, `${count(instance.outstanding)} outstanding`));
    if (instance.ejected) item.append(" ", el("span", { class: "badge error" }, "EJECTED"));
    if (instance.consecutive_failures) {
      item.append(" ", el("span", { class: "badge error" }, `${count(instance.consecutive_failures)} failures in a row`));
    }
    for (const [name, value] of Object.entries(instance)) {
      if (KNOWN_INSTANCE_FIELDS.has(name) || value === null || value === false) continue;
      const shown = typeof value === "number" ? (Number.isInteger(value) ? value : value.toFixed(2)) : value;
      item.append(" ", el("span", { class: "muted" }, `${name.replaceAll("_", " ")} ${shown}`));
    }
    return item;
  }

  function detailPairs(breaker, process, dependency) {
    if (!breaker) return [["Breaker", "none configured for this dependency"]];
    return [
      ["Breaker", breaker.name || "—"],
      ["Successes", count(breaker.success)],
      ["Failures", count(breaker.failure)],
      ["Timeouts", count(breaker.timeout)],
      ["Short-circuited", count(breaker.short_circuited)],
      ["Fallbacks served / failed", `${count(breaker.fallback_success)} / ${count(breaker.fallback_failure)}`],
      ["Mean latency", ms(breaker.latency_mean)],
      ["Trips at error %", count(breaker.error_threshold)],
      ["Open for", ms(breaker.sleep_window_ms)],
      ["Figures from", dependency.breaker_age === null ? "—" : `${dependency.breaker_age.toFixed(1)}s ago`],
      ["Caller instance", process.id],
    ];
  }

  function updateCard(view, process, dependency) {
    const breaker = dependency.breaker;
    const state = breaker ? breaker.state : "NONE";
    const words = STATE_WORDS[state] || state;
    const stale = process.stale ? " stale" : "";
    setAttr(view.card, "class", `breaker-card state-${state.toLowerCase()}${stale}`);
    setAttr(view.card, "data-state", state);
    setAttr(view.card, "data-caller", process.service);
    setAttr(view.card, "data-dependency", dependency.name);
    setAttr(view.card, "data-instance", process.id);
    setText(view.title, `${process.service} → ${dependency.name}`);
    setText(view.who, process.id);
    setText(view.pill, process.stale ? `${words} (stale)` : words);
    const requests = breaker ? breaker.request_rate : 0;
    setAttr(view.circle, "r", String(Math.min(38, 5 + 5 * Math.sqrt(requests)).toFixed(1)));
    const f = view.fields;
    setText(f.error, breaker ? `${count(breaker.error_percentage)}%` : "—");
    setText(f.rate, breaker ? rate(requests) : "—");
    setText(f.short, breaker ? count(breaker.short_circuited) : "—");
    const measured = breaker && breaker.request_count > breaker.short_circuited;
    setText(f.p50, measured ? ms(breaker.latency_p50) : "—");
    setText(f.p99, measured ? ms(breaker.latency_p99) : "—");
    setText(f.flight, breaker ? count(breaker.in_flight) : "—");
    f.error.classList.toggle("error-text", Boolean(breaker && breaker.error_percentage > 0));

    const instances = dependency.instances || [];
    const ejected = instances.filter((i) => i.ejected).length;
    const balancer = dependency.balancer ? `Balancer ${dependency.balancer}` : "Balancer";
    setText(view.balancerTitle, instances.length
      ? `${balancer} · ${instances.length} instance${instances.length === 1 ? "" : "s"}${ejected ? ` · ${ejected} ejected` : ""}`
      : `${balancer} · no instances known`);
    const listKey = JSON.stringify(instances);
    if (listKey !== view.listKey) {
      view.listKey = listKey;
      view.list.replaceChildren(...instances.map(endpointItem));
    }
    const pairs = detailPairs(breaker, process, dependency);
    const detailsKey = JSON.stringify(pairs);
    if (detailsKey !== view.detailsKey) {
      view.detailsKey = detailsKey;
      view.details.replaceChildren(...pairs.map(([label, value]) => {
        const pair = el("div");
        pair.append(el("dt", {}, label), el("dd", {}, value));
        return pair;
      }));
    }
    const latency = measured ? `, latency p50 ${ms(breaker.latency_p50)}, p99 ${ms(breaker.latency_p99)}` : "";
    const described = breaker
      ? `${words}, ${count(breaker.error_percentage)}% errors, ${rate(requests)} requests per second, `
        + `${count(breaker.short_circuited)} short-circuited${latency}`
      : "no circuit breaker";
    setAttr(view.card, "aria-label",
      `Circuit breaker ${process.service} to ${dependency.name} on ${process.id}: ${described}`
      + `${process.stale ? " (stale)" : ""}; ${instances.length} instances${ejected ? `, ${ejected} ejected` : ""}`);
  }

  // ---- a whole snapshot ---------------------------------------------------------------------------

  function updateSection(view, service, processes, now) {
    setText(view.badge, `${processes.length} instance${processes.length === 1 ? "" : "s"}`);
    const rows = [];
    const cards = [];
    const seenRows = new Set();
    const seenCards = new Set();
    for (const process of processes) {
      let row = view.rows.get(process.key);
      if (!row) view.rows.set(process.key, (row = makeRow()));
      updateRow(row, process, now);
      rows.push(row.row);
      seenRows.add(process.key);
      for (const dependency of process.dependencies) {
        const key = `${process.key}→${dependency.name}`;
        let card = view.cardViews.get(key);
        if (!card) view.cardViews.set(key, (card = makeCard()));
        updateCard(card, process, dependency);
        cards.push(card.card);
        seenCards.add(key);
      }
    }
    for (const key of Array.from(view.rows.keys())) if (!seenRows.has(key)) view.rows.delete(key);
    for (const key of Array.from(view.cardViews.keys())) if (!seenCards.has(key)) view.cardViews.delete(key);
    arrange(view.body, rows);
    arrange(view.cards, cards);
    view.noCards.hidden = cards.length > 0;
    setText(view.noCards, processes.some((p) => p.metrics)
      ? "No outgoing calls through the mesh, so no balancers or breakers to show."
      : "No status endpoints registered (no metrics port), so no balancers or breakers to show.");
  }

  function showRegistry(registry) {
    if (registry.ok === true) {
      setText(registryState, "reachable");
      setAttr(registryState, "class", "badge ok");
    } else if (registry.ok === false) {
      setText(registryState, "unreachable");
      setAttr(registryState, "class", "badge error");
    }
    registryProblem.hidden = registry.ok !== false;
    if (registry.ok === false) {
      setText(registryProblem, `The registry cannot be read (${registry.error}). `
        + "Processes already known stay shown with their last figures.");
    }
  }

  function render(snapshot) {
    const now = snapshot.generated_at;
    setText(lastUpdate, clock(now));
    setAttr(lastUpdate, "datetime", new Date(now * 1000).toISOString());
    showRegistry(snapshot.registry);
    const byService = new Map();
    for (const process of snapshot.processes) {
      if (!byService.has(process.service)) byService.set(process.service, []);
      byService.get(process.service).push(process);
    }
    const nodes = [];
    for (const service of Array.from(byService.keys()).sort()) {
      let view = sections.get(service);
      if (!view) sections.set(service, (view = makeSection(service)));
      updateSection(view, service, byService.get(service), now);
      nodes.push(view.section);
    }
    for (const service of Array.from(sections.keys())) if (!byService.has(service)) sections.delete(service);
    arrange(root, nodes);
    empty.hidden = snapshot.processes.length > 0;
    if (!snapshot.processes.length) {
      setText(empty, snapshot.registry.ok === false
        ? "Nothing to show until the registry answers."
        : "No processes are registered.");
    }
    const breakers = snapshot.processes.flatMap((p) => p.dependencies.filter((d) => d.breaker));
    const open = breakers.filter((d) => d.breaker.state !== "CLOSED" && d.breaker.state !== "DISABLED").length;
    setText(summary, `${snapshot.processes.length} processes · ${breakers.length} breakers · ${open} not closed`);
  }

  // ---- the live connection --------------------------------------------------------------------------

  let source = null;
  let retry = null;

  function connect() {
    source = new EventSource(root.dataset.stream);
    source.onmessage = (event) => {
      let snapshot;
      try {
        snapshot = JSON.parse(event.data);
      } catch {
        return;
      }
      lastMessageAt = Date.now();
      lost.hidden = true;
      render(snapshot);
    };
    source.onerror = () => {
      lost.hidden = false;
      if (source.readyState === EventSource.CLOSED) {
        clearTimeout(retry);
        retry = setTimeout(connect, 5000);
      }
    };
  }

  setInterval(() => {
    if (lastMessageAt && Date.now() - lastMessageAt > STALE_STREAM_MS) lost.hidden = false;
  }, 1000);
  window.addEventListener("pagehide", () => {
    if (source) source.close();
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) connect();
  });
  connect();
})();

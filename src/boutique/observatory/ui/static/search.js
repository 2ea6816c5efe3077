// The search page: reload the operations when the service changes, colour the service swatches.
"use strict";

(() => {
  // Every swatch takes its service's colour, the same as on the other pages.
  for (const swatch of document.querySelectorAll(".swatch[data-service]")) {
    swatch.style.background = Observatory.colour(swatch.dataset.service);
  }

  const form = document.getElementById("search-form");
  if (!form) return;
  const service = form.elements.namedItem("service");
  const operation = form.elements.namedItem("operation");
  const status = document.getElementById("operations-status");
  let latest = 0;

  // The operations of the chosen service (of all services for ""), keeping the chosen one if it is there.
  async function reloadOperations() {
    const ticket = ++latest;
    const wanted = operation.value;
    operation.setAttribute("aria-busy", "true");
    try {
      const body = await Observatory.getJSON(`/api/operations?service=${encodeURIComponent(service.value)}`);
      if (ticket !== latest) return;
      const names = [...new Set(body.data.map((entry) => entry.name))].sort();
      operation.replaceChildren(new Option("All operations", ""), ...names.map((name) => new Option(name, name)));
      operation.value = names.includes(wanted) ? wanted : "";
      status.textContent = "";
    } catch (error) {
      if (ticket !== latest) return;
      operation.value = "";
      status.textContent = `Could not load the operations (${error.message}); all operations are searched.`;
    } finally {
      if (ticket === latest) operation.removeAttribute("aria-busy");
    }
  }

  service.addEventListener("change", reloadOperations);
})();

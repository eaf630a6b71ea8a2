// The page: add pictures (drop, paste, choose), send each to POST /api/detect, draw the
// boxes it gets back, and keep the inference service's state in view. No framework and
// no build step: the app serves this file as it is.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const HEALTH_EVERY_MS = 5000;
  // Distinct on light and dark pictures; a class keeps its colour (by label id).
  const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                   "#f032e6", "#9a6324", "#469990", "#800000"];

  const page = {
    cards: [],            // {el, file, url, controller, result}
    labels: new Map(),    // label -> label_id, every class seen so far
    excluded: new Set(),  // classes the user unticked
    threshold: 0.5,
    apiKey: "",           // asked for only when the backend answers 401; kept in memory
    model: null,          // another of the service's models; null: the backend's own
    defaultModel: null,   // the backend's own (--model), as /api/models names it
  };

  const $ = (selector, root = document) => root.querySelector(selector);
  const colour = (labelId) => PALETTE[Math.abs(labelId) % PALETTE.length];
  const ms = (value) => `${Math.max(0, value).toFixed(0)} ms`;

  // ---- adding pictures ------------------------------------------------------------
  function addFiles(fileList) {
    for (const file of Array.from(fileList || [])) {
      const card = makeCard(file);
      page.cards.push(card);
      $("#pictures").append(card.el);
      detect(card);
    }
  }

  function makeCard(file) {
    const el = $("#card-template").content.firstElementChild.cloneNode(true);
    const card = { el, file, url: URL.createObjectURL(file), controller: null, result: null };
    $(".filename", el).textContent = file.name || "pasted picture";
    $(".filename", el).title = file.name || "";
    const img = $("img", el);
    img.alt = file.name || "pasted picture";
    img.src = card.url;
    img.addEventListener("error", () => el.classList.add("no-preview"));
    $(".remove", el).addEventListener("click", () => removeCard(card));
    return card;
  }

  function removeCard(card) {
    if (card.controller) card.controller.abort();
    URL.revokeObjectURL(card.url);
    card.el.remove();
    page.cards = page.cards.filter((c) => c !== card);
    renderSummary();
  }

  // ---- asking the backend ---------------------------------------------------------
  function selectedClasses() {
    if (page.excluded.size === 0) return null; // every class: no filter sent
    return [...page.labels.keys()].filter((label) => !page.excluded.has(label));
  }

  async function detect(card) {
    if (card.controller) card.controller.abort();
    const controller = new AbortController();
    card.controller = controller;
    const classes = selectedClasses();
    if (classes !== null && classes.length === 0) {
      draw(card, { detections: [], image_size: card.result ? card.result.image_size : [1, 1] });
      setStatus(card, "done", "no class selected");
      return;
    }
    const form = new FormData();
    form.append("file", card.file, card.file.name || "pasted.png");
    form.append("score_threshold", page.threshold.toFixed(2));
    if (classes !== null) form.append("classes", classes.join(","));
    if (page.apiKey) form.append("api_key", page.apiKey);
    if (page.model) form.append("model", page.model);
    setStatus(card, "loading", "detecting…");

    const started = performance.now();
    let response;
    let body = null;
    try {
      response = await fetch("/api/detect", { method: "POST", body: form, signal: controller.signal });
      body = await response.json().catch(() => null);
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(card, `the web backend did not answer (${err.message}); is it running?`);
      refreshService();
      return;
    }
    if (controller.signal.aborted) return;
    const roundTrip = performance.now() - started;
    if (!response.ok || !body || !Array.isArray(body.results)) {
      const message = body && body.error ? body.error : `the web backend answered HTTP ${response.status}`;
      if (response.status === 401) askForKey();
      showError(card, message);
      refreshService();
      return;
    }
    const result = body.results[0];
    card.result = result;
    for (const det of result.detections) {
      if (!page.labels.has(det.label)) page.labels.set(det.label, det.label_id);
    }
    draw(card, result);
    showTiming(card, body.timing, roundTrip, body.model_version);
    setStatus(card, "done", `${result.detections.length} object${result.detections.length === 1 ? "" : "s"}`);
    renderClasses();
    renderSummary();
    markServiceReady();
  }

  function detectAll() {
    for (const card of page.cards) detect(card);
  }

  // The operator may require the API key on this API too (--protect-page-api).
  function askForKey() {
    const field = $("#key-field");
    if (!field.hidden) return;
    field.hidden = false;
    $("#api-key").focus();
  }

  // ---- drawing --------------------------------------------------------------------
  function draw(card, result) {
    const [height, width] = result.image_size;
    const svg = $(".overlay", card.el);
    const labels = $(".labels", card.el);
    svg.replaceChildren();
    labels.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    for (const det of result.detections) {
      const [x1, y1, x2, y2] = det.box;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", "box");
      rect.setAttribute("x", x1);
      rect.setAttribute("y", y1);
      rect.setAttribute("width", Math.max(0, x2 - x1));
      rect.setAttribute("height", Math.max(0, y2 - y1));
      rect.setAttribute("stroke", colour(det.label_id));
      rect.dataset.label = det.label;
      svg.append(rect);

      const tag = document.createElement("span");
      tag.className = "label";
      tag.textContent = `${det.label} ${det.score.toFixed(2)}`;
      tag.style.left = `${(100 * x1) / width}%`;
      tag.style.top = `${(100 * y1) / height}%`;
      tag.style.background = colour(det.label_id);
      if (y1 / height < 0.08) tag.classList.add("inside"); // no room above the box
      labels.append(tag);
    }
    card.el.dataset.count = String(result.detections.length);

    const counts = new Map();
    for (const det of result.detections) counts.set(det.label, (counts.get(det.label) || 0) + 1);
    const list = $(".counts", card.el);
    list.replaceChildren(...[...counts.entries()].sort().map(([label, n]) => countItem(label, n)));
  }

  function countItem(label, n) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(page.labels.get(label) ?? 0);
    li.append(swatch, `${label} ${n}`);
    li.dataset.label = label;
    li.dataset.count = String(n);
    return li;
  }

  function showTiming(card, timing, roundTrip, version) {
    const inference = timing.inference_ms;
    const rest = roundTrip - inference;
    const el = $(".timing", card.el);
    el.textContent = `inference service ${ms(inference)} · backend + network ${ms(rest)}`
      + (version ? ` · model version ${version}` : "");
    el.title = `round trip from this browser ${ms(roundTrip)}; in the backend ${ms(timing.total_ms)}`;
  }

  function setStatus(card, state, text) {
    card.el.dataset.state = state;
    $(".status", card.el).textContent = text;
    if (state !== "error") $(".error", card.el).hidden = true;
  }

  function showError(card, message) {
    draw(card, { detections: [], image_size: card.result ? card.result.image_size : [1, 1] });
    $(".timing", card.el).textContent = "";
    const el = $(".error", card.el);
    el.textContent = message;
    el.hidden = false;
    setStatus(card, "error", "failed");
    renderSummary();
  }

  // ---- class filter and summary ---------------------------------------------------
  function renderClasses() {
    const box = $("#classes");
    $("#classes-hint").hidden = page.labels.size > 0;
    for (const [label, labelId] of [...page.labels.entries()].sort()) {
      if (box.querySelector(`input[value="${CSS.escape(label)}"]`)) continue;
      const wrap = document.createElement("label");
      wrap.className = "class";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = label;
      input.checked = !page.excluded.has(label);
      input.addEventListener("change", () => {
        if (input.checked) page.excluded.delete(label); else page.excluded.add(label);
        detectAll();
      });
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour(labelId);
      wrap.append(input, swatch, label);
      box.append(wrap);
    }
  }

  function renderSummary() {
    const totals = new Map();
    let objects = 0;
    let done = 0;
    for (const card of page.cards) {
      if (card.el.dataset.state !== "done") continue;
      done += 1;
      for (const li of card.el.querySelectorAll(".counts li")) {
        const n = Number(li.dataset.count);
        totals.set(li.dataset.label, (totals.get(li.dataset.label) || 0) + n);
        objects += n;
      }
    }
    const summary = $("#summary");
    if (page.cards.length === 0) {
      summary.replaceChildren();
      return;
    }
    const head = document.createElement("p");
    head.textContent = `${done} of ${page.cards.length} picture${page.cards.length === 1 ? "" : "s"} done, ${objects} object${objects === 1 ? "" : "s"}`;
    const list = document.createElement("ul");
    list.className = "counts";
    list.append(...[...totals.entries()].sort().map(([label, n]) => countItem(label, n)));
    summary.replaceChildren(head, list);
  }

  // ---- inference service state ----------------------------------------------------
  const SERVICE_TEXT = {
    ready: "ready",
    not_ready: "not ready",
    unreachable: "unreachable",
    error: "error",
    unknown: "checking…",
  };

  function showService(state, detail, where) {
    const el = $("#service");
    el.dataset.state = state;
    el.title = detail || "";
    $("#service-text").textContent = `inference service${where ? ` (${where})` : ""}: ${SERVICE_TEXT[state] || state}`;
  }

  function markServiceReady() {
    if ($("#service").dataset.state !== "ready") refreshService();
  }

  async function refreshService() {
    try {
      const response = await fetch("/healthz", { cache: "no-store" });
      const body = await response.json();
      const service = body.inference_service;
      showService(service.state, service.detail, `${service.model}, ${service.protocol}`);
    } catch (err) {
      showService("unreachable", "the web backend itself does not answer", "");
      $("#service-text").textContent = "web backend unreachable";
    }
  }

  // ---- the model picker: shown only when the service serves several models ---------
  async function loadModels() {
    let body = null;
    try {
      const response = await fetch("/api/models", { cache: "no-store" });
      body = response.ok ? await response.json() : null;
    } catch (err) {
      return; // the service state line already says what is wrong
    }
    if (!body || !Array.isArray(body.models) || body.models.length < 2) return;
    const select = $("#model");
    page.defaultModel = body.default;
    const chosen = page.model || body.default;
    select.replaceChildren(...body.models.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      option.selected = name === chosen;
      return option;
    }));
    $("#model-field").hidden = false;
  }

  function chooseModel(name) {
    page.model = name === page.defaultModel ? null : name;
    page.labels.clear(); // another model, other classes
    page.excluded.clear();
    for (const el of [...$("#classes").querySelectorAll("label.class")]) el.remove();
    renderClasses();
    detectAll();
  }

  // ---- wiring ---------------------------------------------------------------------
  function wire() {
    const drop = $("#drop");
    $("#file").addEventListener("change", (event) => {
      addFiles(event.target.files);
      event.target.value = ""; // the same file can be chosen again
    });
    for (const name of ["dragenter", "dragover"]) {
      document.addEventListener(name, (event) => {
        event.preventDefault();
        drop.classList.add("over");
      });
    }
    document.addEventListener("dragleave", (event) => {
      if (event.target === drop || !drop.contains(event.relatedTarget)) drop.classList.remove("over");
    });
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      addFiles(event.dataTransfer && event.dataTransfer.files);
    });
    document.addEventListener("paste", (event) => {
      const files = event.clipboardData ? event.clipboardData.files : null;
      if (files && files.length) {
        event.preventDefault();
        addFiles(files);
      }
    });
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") $("#file").click();
    });

    const slider = $("#threshold");
    const shown = $("#threshold-value");
    slider.addEventListener("input", () => { shown.textContent = Number(slider.value).toFixed(2); });
    slider.addEventListener("change", () => {
      page.threshold = Number(slider.value);
      shown.textContent = page.threshold.toFixed(2);
      detectAll();
    });
    page.threshold = Number(slider.value);
    shown.textContent = page.threshold.toFixed(2);

    $("#api-key").addEventListener("change", (event) => {
      page.apiKey = event.target.value.trim();
      detectAll();
    });

    $("#clear").addEventListener("click", () => {
      for (const card of [...page.cards]) removeCard(card);
    });

    const picker = $("#model");
    picker.addEventListener("change", () => chooseModel(picker.value));
    loadModels();

    refreshService();
    setInterval(refreshService, HEALTH_EVERY_MS);
  }

  wire();
})();

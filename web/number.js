/* Number mode: a wide pad for a whole number, read by POST /predict/number.
 *
 * - The mode switch (#mode-digit, #mode-number) shows one pad at a time; the one-digit
 *   pad (web/app.js) is the default, and #number in the address opens this one. The
 *   body carries class "number-mode" while it is shown (app.js then leaves the keys).
 * - Strokes are kept as point lists in 840x280 drawing coordinates and painted with
 *   the one-digit pad's brush (window.digits.paint, from app.js); the PNG sent is
 *   painted at 840x280, black ink on a transparent background.
 * - Live prediction as on the digit pad (web/live.js): 200 ms after the last change, at
 *   most one request in flight, an answer about an older drawing dropped (the newer one
 *   sent).
 * - Each digit found gets a box over the canvas with its digit above it. Hovering a
 *   box with the mouse, or tapping (or focusing) the digit above it, shows that
 *   digit's probabilities.
 */
"use strict";

(() => {
  const WIDTH = 840; // drawing coordinates and the exported PNG's size
  const HEIGHT = 280;
  const MIN_STEP = 0.75;

  const $ = (id) => document.getElementById(id);
  const canvas = $("number-canvas");
  const section = $("number-mode");
  const paint = window.digits && window.digits.paint;
  if (!canvas || !section || !paint || !window.digits.live) return;
  const ctx = canvas.getContext("2d");
  const exportCanvas = document.createElement("canvas");
  exportCanvas.width = WIDTH;
  exportCanvas.height = HEIGHT;

  const ui = {
    digitMode: $("mode-digit"),
    numberMode: $("mode-number"),
    digitPanels: document.querySelector(".layout"),
    boxes: $("number-boxes"),
    recognize: $("number-recognize"),
    undo: $("number-undo"),
    clear: $("number-clear"),
    number: $("number-result"),
    confidence: $("number-confidence"),
    version: $("number-version"),
    latency: $("number-latency"),
    probs: $("number-probs"),
    probsHeading: $("number-probs-heading"),
    bars: Array.from(document.querySelectorAll("#number-probs .bar")),
    status: $("number-status"),
  };

  const strokes = [];
  let active = null; // {id, stroke}
  let digits = []; // the last answer's digits
  let shown = -1; // the digit whose probabilities are shown

  // ------------------------------------------------------------------ mode

  function setMode(number) {
    section.hidden = !number;
    if (ui.digitPanels) ui.digitPanels.hidden = number;
    document.body.classList.toggle("number-mode", number);
    ui.digitMode.setAttribute("aria-pressed", String(!number));
    ui.numberMode.setAttribute("aria-pressed", String(number));
    if (number) fitCanvas();
  }

  // ------------------------------------------------------------------ drawing

  function repaint() {
    paint(ctx, canvas.width / WIDTH, strokes);
  }

  function fitCanvas() {
    const width = Math.round(canvas.clientWidth * (window.devicePixelRatio || 1));
    if (width > 0 && canvas.width !== width) {
      canvas.width = width;
      canvas.height = Math.round((width * HEIGHT) / WIDTH);
    }
    repaint();
  }

  function toDrawing(event) {
    const rect = canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left - canvas.clientLeft) * WIDTH) / (canvas.clientWidth || WIDTH),
      ((event.clientY - rect.top - canvas.clientTop) * HEIGHT) / (canvas.clientHeight || HEIGHT),
    ];
  }

  function extend(stroke, point) {
    const last = stroke[stroke.length - 1];
    if (last && Math.hypot(point[0] - last[0], point[1] - last[1]) < MIN_STEP) return false;
    stroke.push(point);
    return true;
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (active || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    try {
      canvas.setPointerCapture(event.pointerId);
    } catch {
      /* the pointer may already be gone */
    }
    active = { id: event.pointerId, stroke: [toDrawing(event)] };
    strokes.push(active.stroke);
    changed();
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!active) {
      if (event.pointerType === "mouse") hover(toDrawing(event));
      return;
    }
    if (event.pointerId !== active.id) return;
    event.preventDefault();
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    let moved = false;
    for (const e of events.length ? events : [event]) moved = extend(active.stroke, toDrawing(e)) || moved;
    if (moved) changed();
  });

  function endStroke(event) {
    if (!active || event.pointerId !== active.id) return;
    if (event.type === "pointerup") extend(active.stroke, toDrawing(event));
    active = null;
    changed();
  }

  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    canvas.addEventListener(type, endStroke);
  }
  window.addEventListener("pointerup", endStroke);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  function changed() {
    requestAnimationFrame(repaint);
    live.changed();
  }

  function undo() {
    active = null;
    if (!strokes.length) {
      setStatus("Nothing to undo: the canvas is empty.");
      return;
    }
    strokes.pop();
    if (strokes.length) {
      changed();
      return;
    }
    forget();
    setStatus("Undone: the canvas is empty.");
  }

  function clearAll() {
    active = null;
    strokes.length = 0;
    forget();
    setStatus("Cleared: write a number.");
  }

  /** The drawing is empty: drop timers, answers on their way and the result. */
  function forget() {
    live.forget();
    requestAnimationFrame(repaint);
    showDigits([]);
    ui.number.textContent = ui.confidence.textContent = ui.latency.textContent = "";
  }

  // ------------------------------------------------------------------ requests

  const live = window.digits.live({
    url: "/predict/number",
    image: () => {
      paint(exportCanvas.getContext("2d"), 1, strokes);
      return exportCanvas.toDataURL("image/png");
    },
    hasInk: () => strokes.length > 0,
    onSend: (kind) => {
      if (kind === "manual") setStatus("Recognising…");
    },
    onAnswer: settle,
  });
  const request = live.request;

  /** The answer about the drawing as it is (web/live.js drops the stale ones). */
  function settle(sent, elapsed, response, body, error) {
    if (error) {
      setStatus(error.name === "AbortError" ? "The recogniser took too long to answer. Try again."
        : "Network error: the server could not be reached.", "error");
    } else if (response.ok && body && typeof body.number === "string") {
      show(body, elapsed);
    } else {
      failed(response, body, sent.kind);
    }
  }

  function failed(response, body, kind) {
    const err = (body && body.error) || {};
    if (response.status === 422 && err.code === "blank_image") {
      showDigits([]);
      ui.number.textContent = "";
      setStatus("The canvas is blank — write a number first.", "error");
    } else if (response.status === 429) {
      setStatus("Too many requests — slow down, retrying shortly.", "error");
      const seconds = Math.min(Math.max(Number(response.headers.get("Retry-After")) || 1, 1), 30);
      live.retryAfter(seconds, kind);
    } else if (response.status === 503) {
      setStatus("The recogniser is not ready: no worker is running. Try again in a moment.", "error");
    } else {
      setStatus(err.message ? `Error: ${err.message} (HTTP ${response.status}).`
        : `The server answered HTTP ${response.status}.`, "error");
    }
  }

  // ------------------------------------------------------------------ display

  const percent = (p) => `${(p * 100).toFixed(1)}%`;

  function show(body, elapsed) {
    ui.number.textContent = body.number;
    ui.confidence.textContent = percent(Number(body.confidence) || 0);
    ui.version.textContent = body.model_version == null ? "" : String(body.model_version);
    ui.latency.textContent = `${Math.round(elapsed)} ms`;
    showDigits(Array.isArray(body.digits) ? body.digits : []);
    setStatus(`Recognised ${body.number} with ${percent(Number(body.confidence) || 0)} confidence.`, "ok");
  }

  /** A box over each digit, with the digit above it as a button. */
  function showDigits(list) {
    digits = list;
    ui.boxes.replaceChildren();
    list.forEach((d, i) => {
      const [x, y, w, h] = d.box;
      const box = document.createElement("div");
      box.className = "number-box";
      box.dataset.index = String(i);
      box.style.left = `${(x / WIDTH) * 100}%`;
      box.style.top = `${(y / HEIGHT) * 100}%`;
      box.style.width = `${(w / WIDTH) * 100}%`;
      box.style.height = `${(h / HEIGHT) * 100}%`;
      const label = document.createElement("button");
      label.type = "button";
      label.className = "number-label";
      label.textContent = String(d.digit);
      label.setAttribute("aria-label", `Digit ${i + 1}: ${d.digit}, ${percent(d.confidence)}; show its probabilities`);
      label.addEventListener("click", () => showProbabilities(i));
      label.addEventListener("focus", () => showProbabilities(i));
      box.append(label);
      ui.boxes.append(box);
    });
    if (!list.length) {
      shown = -1;
      ui.probs.hidden = true;
    } else {
      showProbabilities(Math.min(Math.max(shown, 0), list.length - 1));
    }
  }

  function hover([x, y]) {
    const i = digits.findIndex(({ box: [bx, by, bw, bh] }) =>
      x >= bx && x <= bx + bw && y >= by && y <= by + bh);
    if (i >= 0 && i !== shown) showProbabilities(i);
  }

  function showProbabilities(i) {
    const d = digits[i];
    if (!d) return;
    shown = i;
    for (const box of ui.boxes.children) {
      box.classList.toggle("is-shown", Number(box.dataset.index) === i);
    }
    ui.probsHeading.textContent = `Digit ${i + 1} of ${digits.length}: ${d.digit} (${percent(d.confidence)})`;
    for (const bar of ui.bars) {
      const digit = Number(bar.dataset.numberDigit);
      const p = Math.min(Math.max(Number(d.probabilities[String(digit)]) || 0, 0), 1);
      bar.dataset.p = String(p);
      bar.style.width = `${(p * 100).toFixed(2)}%`;
      const row = bar.closest("li");
      row.classList.toggle("is-top", digit === d.digit);
      row.querySelector(".bar-value").textContent = p > 0 && p < 0.001 ? "<0.1%" : percent(p);
    }
    ui.probs.hidden = false;
  }

  function setStatus(text, tone) {
    ui.status.textContent = text;
    ui.status.classList.toggle("is-error", tone === "error");
    ui.status.classList.toggle("is-ok", tone === "ok");
  }

  // ------------------------------------------------------------------ wiring

  ui.digitMode.addEventListener("click", () => setMode(false));
  ui.numberMode.addEventListener("click", () => setMode(true));
  ui.recognize.addEventListener("click", () => request("manual"));
  ui.undo.addEventListener("click", undo);
  ui.clear.addEventListener("click", clearAll);
  document.addEventListener("keydown", (event) => {
    if (section.hidden || event.defaultPrevented || event.isComposing || event.altKey) return;
    const mod = event.ctrlKey || event.metaKey;
    const inControl = event.target instanceof Element && event.target.closest("button, a, input");
    if (mod && !event.shiftKey && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undo();
    } else if (event.key === "Escape" && !mod) {
      event.preventDefault();
      clearAll();
    } else if (event.key === "Enter" && !mod && !event.shiftKey && !inControl) {
      event.preventDefault();
      request("manual");
    }
  });
  if (typeof ResizeObserver === "function") new ResizeObserver(() => fitCanvas()).observe(canvas);

  setStatus("Write a number, digits side by side, left to right.");
  setMode(window.location.hash === "#number");
})();

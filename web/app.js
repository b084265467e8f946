/* Handwritten digit recogniser: the drawing pad and its conversation with /predict.
 *
 * - Strokes are kept as point lists in a 280x280 coordinate space. The visible canvas
 *   is repainted from them at the device's pixel density (crisp on high-DPI screens);
 *   the PNG sent to the API is always painted at 280x280 on a separate canvas, black
 *   ink on a transparent background.
 * - Live prediction (web/live.js): 200 ms after the last pointer move or stroke end. At
 *   most one request is in flight, and an answer about an older drawing is dropped
 *   (the newer drawing is then sent instead).
 * - Every outcome of every request is written to #status (aria-live="polite").
 */
"use strict";

(() => {
  const SIZE = 280; // drawing coordinates and the exported PNG's side
  const LINE_WIDTH = 18;
  const INK = "#000";
  const MIN_STEP = 0.75; // ignore pointer moves shorter than this (drawing units)

  const MESSAGES = {
    loading: "Checking the recogniser…",
    ready: "Ready: draw a digit from 0 to 9.",
    readyAgain: "The recogniser is ready again.",
    notReady: "The recogniser is not ready: no worker is running. Try again in a moment.",
    noBroker: "The recogniser is not ready: its task queue is unreachable. Try again in a moment.",
    busy: "Too many requests — slow down, retrying shortly.",
    timeout: "The recogniser took too long to answer. Try again.",
    blank: "The canvas is blank — draw a digit first.",
    network: "Network error: the server could not be reached. Check the connection and try again.",
    cleared: "Cleared: draw a digit.",
    working: "Recognising…",
  };

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const exportCanvas = document.createElement("canvas");
  exportCanvas.width = SIZE;
  exportCanvas.height = SIZE;
  const exportCtx = exportCanvas.getContext("2d");

  const ui = {
    recognize: $("recognize"),
    undo: $("undo"),
    clear: $("clear"),
    digit: $("result-digit"),
    confidence: $("result-confidence"),
    version: $("model-version"),
    latency: $("latency"),
    notDigit: $("not-a-digit"),
    status: $("status"),
    bars: Array.from(document.querySelectorAll(".bar[data-digit]")),
  };

  // ------------------------------------------------------------------ state

  const strokes = []; // each stroke: [[x, y], ...] in SIZE coordinates
  let active = null; // {id, stroke}: the stroke being drawn, if any
  let readyTimer = 0;
  let readyDelay = 2000;
  let notReadyShown = false; // the last outcome was a 503 (or /ready said so)
  let repaintQueued = false;

  // ------------------------------------------------------------------ painting

  function paint(context, scale, list) {
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, context.canvas.width, context.canvas.height);
    context.setTransform(scale, 0, 0, scale, 0, 0);
    context.lineWidth = LINE_WIDTH;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.strokeStyle = INK;
    context.fillStyle = INK;
    for (const points of list) {
      if (!points.length) continue;
      const [x0, y0] = points[0];
      context.beginPath();
      if (points.length === 1) {
        context.arc(x0, y0, LINE_WIDTH / 2, 0, Math.PI * 2);
        context.fill();
        continue;
      }
      context.moveTo(x0, y0);
      // Smooth: a quadratic curve through the midpoints of successive points.
      for (let i = 1; i < points.length - 1; i++) {
        const [x, y] = points[i];
        const [nx, ny] = points[i + 1];
        context.quadraticCurveTo(x, y, (x + nx) / 2, (y + ny) / 2);
      }
      const [xn, yn] = points[points.length - 1];
      context.lineTo(xn, yn);
      context.stroke();
    }
  }

  // The number pad (web/number.js) paints with the same brush.
  window.digits = Object.assign(window.digits || {}, { paint });

  function repaint() {
    repaintQueued = false;
    paint(ctx, canvas.width / SIZE, strokes);
  }

  function queueRepaint() {
    if (!repaintQueued) {
      repaintQueued = true;
      requestAnimationFrame(repaint);
    }
  }

  /** Match the backing store to the displayed size times the pixel ratio. */
  function fitCanvas() {
    const side = Math.round(canvas.clientWidth * (window.devicePixelRatio || 1));
    if (side > 0 && (canvas.width !== side || canvas.height !== side)) {
      canvas.width = side;
      canvas.height = side;
    }
    repaint();
  }

  function exportPng() {
    paint(exportCtx, 1, strokes);
    return exportCanvas.toDataURL("image/png");
  }

  // ------------------------------------------------------------------ pointer input

  function toDrawing(event) {
    const rect = canvas.getBoundingClientRect();
    const width = canvas.clientWidth || rect.width || SIZE;
    const height = canvas.clientHeight || rect.height || SIZE;
    return [
      ((event.clientX - rect.left - canvas.clientLeft) * SIZE) / width,
      ((event.clientY - rect.top - canvas.clientTop) * SIZE) / height,
    ];
  }

  function addPoint(stroke, point) {
    const last = stroke[stroke.length - 1];
    if (last && Math.hypot(point[0] - last[0], point[1] - last[1]) < MIN_STEP) return false;
    stroke.push(point);
    return true;
  }

  function onPointerDown(event) {
    if (active) return; // one pointer draws at a time; extra fingers are ignored
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    try {
      canvas.setPointerCapture(event.pointerId);
    } catch {
      /* the pointer may already be gone */
    }
    const stroke = [toDrawing(event)];
    active = { id: event.pointerId, stroke };
    strokes.push(stroke);
    drawingChanged();
  }

  function onPointerMove(event) {
    if (!active || event.pointerId !== active.id) return;
    event.preventDefault();
    const events =
      typeof event.getCoalescedEvents === "function" ? event.getCoalescedEvents() : [];
    let moved = false;
    for (const e of events.length ? events : [event]) {
      moved = addPoint(active.stroke, toDrawing(e)) || moved;
    }
    if (moved) drawingChanged();
  }

  function onPointerEnd(event) {
    if (!active || event.pointerId !== active.id) return;
    if (event.type === "pointerup") addPoint(active.stroke, toDrawing(event));
    active = null;
    try {
      if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    } catch {
      /* already released */
    }
    drawingChanged();
  }

  function drawingChanged() {
    queueRepaint();
    live.changed();
  }

  // ------------------------------------------------------------------ actions

  function undo() {
    active = null;
    if (!strokes.length) {
      setStatus("Nothing to undo: the canvas is empty.");
      return;
    }
    strokes.pop();
    queueRepaint();
    if (strokes.length) {
      live.changed();
    } else {
      live.forget();
      resetResult();
      setStatus("Undone: the canvas is empty.");
    }
  }

  function clearAll() {
    active = null;
    strokes.length = 0;
    live.forget();
    queueRepaint();
    resetResult();
    setStatus(MESSAGES.cleared);
  }

  // ------------------------------------------------------------------ requests

  const live = window.digits.live({
    url: "/predict",
    image: exportPng,
    hasInk: () => strokes.length > 0,
    onSend: (kind) => {
      if (kind === "manual") setStatus(MESSAGES.working);
    },
    onAnswer: settle,
  });
  const request = live.request;
  const readBody = window.digits.readBody;

  /** The answer about the drawing as it is (web/live.js drops the stale ones). */
  function settle(sent, elapsed, response, body, error) {
    notReadyShown = false; // handleError sets it again for another 503
    if (error) {
      showError(error.name === "AbortError" ? MESSAGES.timeout : MESSAGES.network);
    } else if (response.ok && body && typeof body.digit === "number") {
      showResult(body, elapsed);
      // web/feedback.js asks "Right?" about this answer.
      document.dispatchEvent(new CustomEvent("digits:answer", { detail: {
        answer: body, image: sent.image, requestId: response.headers.get("X-Request-ID") } }));
    } else {
      handleError(response, body, sent.kind);
    }
  }

  function handleError(response, body, kind) {
    const status = response.status;
    const err = (body && body.error) || {};
    const code = err.code || "";
    if (status === 503) {
      showError(code === "broker_unavailable" ? MESSAGES.noBroker : MESSAGES.notReady);
      notReadyShown = true;
      watchReady();
    } else if (status === 429) {
      showError(MESSAGES.busy);
      const seconds = Math.min(Math.max(Number(response.headers.get("Retry-After")) || 1, 1), 30);
      live.retryAfter(seconds, kind);
    } else if (status === 504) {
      showError(MESSAGES.timeout);
    } else if (status === 422 && code === "blank_image") {
      resetResult();
      showError(MESSAGES.blank);
    } else if (err.message) {
      showError(`Error: ${err.message} (HTTP ${status}).`);
    } else {
      showError(`The server answered HTTP ${status}${response.statusText ? ` ${response.statusText}` : ""}.`);
    }
  }

  /** After a 503, poll /ready (backing off) and say so when the workers are back. */
  function watchReady() {
    if (readyTimer) return;
    readyTimer = setTimeout(async () => {
      readyTimer = 0;
      let ready = false;
      try {
        const response = await fetch("/ready", { cache: "no-store" });
        ready = response.ok;
      } catch {
        ready = false;
      }
      if (ready) {
        readyDelay = 2000;
        if (!notReadyShown) return; // an answer has arrived meanwhile
        notReadyShown = false;
        if (strokes.length) request("live");
        else setStatus(MESSAGES.readyAgain, "ok");
      } else {
        readyDelay = Math.min(readyDelay * 1.5, 15000);
        watchReady();
      }
    }, readyDelay);
  }

  async function checkReady() {
    setStatus(MESSAGES.loading);
    try {
      const response = await fetch("/ready", { cache: "no-store" });
      if (strokes.length || live.busy()) return; // the user was faster; their answer speaks
      if (response.ok) {
        setStatus(MESSAGES.ready, "ok");
        return;
      }
      const body = await readBody(response);
      const reason = String((body && body.reason) || "");
      showError(/redis/i.test(reason) ? MESSAGES.noBroker : MESSAGES.notReady);
      notReadyShown = true;
      watchReady();
    } catch {
      if (!strokes.length && !live.busy()) showError(MESSAGES.network);
    }
  }

  // ------------------------------------------------------------------ display

  const percent = (p) => `${(p * 100).toFixed(1)}%`;

  function showResult(body, elapsed) {
    const digit = body.digit;
    ui.digit.textContent = String(digit);
    ui.confidence.textContent = percent(Number(body.confidence) || 0);
    ui.version.textContent = body.model_version == null ? "" : String(body.model_version);
    ui.latency.textContent = `${Math.round(elapsed)} ms`;
    ui.latency.title =
      typeof body.latency_ms === "number" ? `server time ${body.latency_ms.toFixed(1)} ms` : "";
    const probabilities = body.probabilities || {};
    for (const bar of ui.bars) {
      const d = Number(bar.dataset.digit);
      const p = Math.min(Math.max(Number(probabilities[String(d)]) || 0, 0), 1);
      setBar(bar, p, d === digit, true);
    }
    // is_digit false: the model scores the drawing as not a digit (NOT_A_DIGIT_THRESHOLD);
    // the bars still show which digit it would be.
    if (body.is_digit === false) {
      const text = `That doesn't look like a digit (not-a-digit score ${percent(Number(body.not_a_digit) || 0)}).`;
      ui.digit.textContent = "?";
      ui.notDigit.textContent = text;
      ui.notDigit.hidden = false;
      setStatus(`${text} Closest digit: ${digit}.`, "ok");
      return;
    }
    ui.notDigit.hidden = true;
    ui.notDigit.textContent = "";
    setStatus(`Recognised ${digit} with ${percent(Number(body.confidence) || 0)} confidence.`, "ok");
  }

  function setBar(bar, p, top, labelled) {
    bar.dataset.p = String(p);
    bar.style.width = `${(p * 100).toFixed(2)}%`;
    const row = bar.closest("li");
    if (row) {
      row.classList.toggle("is-top", top);
      const value = row.querySelector(".bar-value");
      if (value) value.textContent = labelled ? barLabel(p) : "";
    }
  }

  function barLabel(p) {
    if (p <= 0) return "0%";
    return p < 0.001 ? "<0.1%" : percent(p);
  }

  function resetResult() {
    document.dispatchEvent(new CustomEvent("digits:reset"));
    ui.digit.textContent = "";
    ui.confidence.textContent = "";
    ui.latency.textContent = "";
    ui.latency.title = "";
    ui.notDigit.hidden = true;
    ui.notDigit.textContent = "";
    for (const bar of ui.bars) setBar(bar, 0, false, false);
  }

  function setStatus(text, tone) {
    ui.status.textContent = text;
    ui.status.classList.toggle("is-error", tone === "error");
    ui.status.classList.toggle("is-ok", tone === "ok");
  }

  function showError(text) {
    setStatus(text, "error");
  }

  // ------------------------------------------------------------------ wiring

  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerEnd);
  canvas.addEventListener("pointercancel", onPointerEnd);
  canvas.addEventListener("lostpointercapture", onPointerEnd);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  // Fallback if pointer capture failed and the pointer was released elsewhere.
  window.addEventListener("pointerup", onPointerEnd);
  window.addEventListener("pointercancel", onPointerEnd);

  ui.recognize.addEventListener("click", () => request("manual"));
  ui.undo.addEventListener("click", undo);
  ui.clear.addEventListener("click", clearAll);

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing || event.altKey) return;
    if (document.body.classList.contains("number-mode")) return; // web/number.js has the keys
    const target = event.target;
    const inControl =
      target instanceof Element && target.closest("button, a, input, select, textarea");
    const mod = event.ctrlKey || event.metaKey;
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

  if (typeof ResizeObserver === "function") {
    new ResizeObserver(() => fitCanvas()).observe(canvas);
  }
  window.addEventListener("resize", () => fitCanvas());
  // Zooming or moving to another screen changes the pixel ratio: re-fit each time.
  (function watchPixelRatio() {
    const query = window.matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
    query.addEventListener("change", () => {
      fitCanvas();
      watchPixelRatio();
    }, { once: true });
  })();

  fitCanvas();
  resetResult();
  checkReady();
})();

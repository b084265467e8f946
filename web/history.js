/* History of answers: a panel of the drawings recognised on this device, kept in
 * localStorage, exported as CSV or JSON.
 *
 * - app.js announces every answer ("digits:answer": {answer, image, requestId}) and every
 *   reset of the result ("digits:reset": Clear, Undo to empty). One drawing is one entry:
 *   live answers while it is drawn, and Recognize, update it; the first answer after a
 *   reset starts the next one.
 * - An entry holds a 56 px thumbnail, the digit (or number), the confidence, the model
 *   version, the time (ISO 8601, UTC), the request ID and the user's correction.
 * - Corrections come from web/feedback.js (or anything else): dispatch
 *   `document.dispatchEvent(new CustomEvent("digits:correction",
 *     { detail: { label: 4, requestId } }))`, or call `window.digitsHistory.correct(4,
 *   requestId)`. The entry whose answer had that X-Request-ID takes it; without an id,
 *   the newest entry does.
 * - At most MAX entries; the oldest go first. Saving is deferred (SAVE_DELAY_MS) so that
 *   answers arriving while drawing never serialise the list in the middle of a stroke;
 *   the list itself is updated node by node, never rebuilt.
 */
"use strict";

(() => {
  const KEY = "digits.history";
  const MAX = 200;
  const THUMB = 56;
  const SAVE_DELAY_MS = 600;
  const COLUMNS = ["time", "answer", "kind", "confidence", "model_version", "correction",
    "request_id"];

  const $ = (id) => document.getElementById(id);
  const ui = {
    list: $("history-list"),
    count: $("history-count"),
    empty: $("history-empty"),
    csv: $("history-csv"),
    json: $("history-json"),
    clear: $("history-clear"),
  };
  if (!ui.list) return;

  const thumbCanvas = document.createElement("canvas");
  thumbCanvas.width = THUMB;
  thumbCanvas.height = THUMB;
  const thumbCtx = thumbCanvas.getContext("2d");
  const when = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

  let entries = load(); // oldest first
  let current = null; // the entry of the drawing on the canvas, until a reset
  let saveTimer = 0;
  let nextId = Date.now();
  const nodes = new Map(); // entry id -> its <li>
  const pendingThumb = new WeakMap(); // entry -> the image its thumbnail is being made from

  // ------------------------------------------------------------------ storage

  function load() {
    try {
      const value = JSON.parse(localStorage.getItem(KEY) || "[]");
      if (!Array.isArray(value)) return [];
      return value.filter((e) => e && typeof e === "object" && typeof e.answer === "string")
        .slice(-MAX)
        .map((e, i) => ({ ...e, id: i + 1 }));
    } catch {
      return [];
    }
  }

  function scheduleSave() {
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, SAVE_DELAY_MS);
  }

  function save() {
    clearTimeout(saveTimer);
    saveTimer = 0;
    for (;;) {
      try {
        if (entries.length) localStorage.setItem(KEY, JSON.stringify(entries.map(stored)));
        else localStorage.removeItem(KEY);
        return;
      } catch {
        // Full (other data of this site, big thumbnails): drop the oldest quarter and retry.
        if (!entries.length) return;
        drop(Math.ceil(entries.length / 4));
        counts();
      }
    }
  }

  function stored(entry) {
    const { id, ...rest } = entry;
    return rest;
  }

  // ------------------------------------------------------------------ recording

  function onAnswer(detail) {
    const a = (detail && detail.answer) || {};
    const number = typeof a.number === "string" ? a.number : null;
    const answer = number !== null ? number : Number.isInteger(a.digit) ? String(a.digit) : null;
    if (answer === null) return;
    const fields = {
      time: new Date().toISOString(),
      answer,
      kind: number !== null ? "number" : "digit",
      confidence: Number.isFinite(a.confidence) ? a.confidence : null,
      model_version: a.model_version == null ? null : a.model_version,
      correction: null, // a correction was about the drawing before this answer
      request_id: (detail && detail.requestId) || null,
    };
    if (current && nodes.has(current.id)) {
      Object.assign(current, fields);
    } else {
      current = { id: ++nextId, ...fields, thumbnail: "" };
      entries.push(current);
      if (entries.length > MAX) drop(entries.length - MAX);
    }
    show(current);
    makeThumbnail(current, detail && detail.image);
    scheduleSave();
  }

  function correct(label, requestId) {
    let entry = null;
    if (requestId) {
      for (let i = entries.length - 1; i >= 0 && !entry; i--) {
        if (entries[i].request_id === requestId) entry = entries[i];
      }
    } else {
      entry = entries[entries.length - 1] || null;
    }
    if (!entry || label == null || label === "") return false;
    entry.correction = String(label);
    show(entry);
    scheduleSave();
    return true;
  }

  function drop(n) {
    for (const old of entries.splice(0, n)) {
      const li = nodes.get(old.id);
      if (li) li.remove();
      nodes.delete(old.id);
      if (old === current) current = null;
    }
  }

  function clearHistory() {
    entries = [];
    current = null;
    nodes.clear();
    ui.list.replaceChildren();
    save();
    counts();
  }

  function makeThumbnail(entry, image) {
    if (typeof image !== "string" || !image.startsWith("data:image/")) return;
    pendingThumb.set(entry, image);
    const img = new Image();
    img.onload = () => {
      if (pendingThumb.get(entry) !== image) return; // a newer answer replaced it
      pendingThumb.delete(entry);
      thumbCtx.fillStyle = "#fff";
      thumbCtx.fillRect(0, 0, THUMB, THUMB);
      thumbCtx.drawImage(img, 0, 0, THUMB, THUMB);
      entry.thumbnail = thumbCanvas.toDataURL("image/png");
      if (nodes.has(entry.id)) show(entry);
      scheduleSave();
    };
    img.src = image;
  }

  // ------------------------------------------------------------------ display

  function node(entry) {
    let li = nodes.get(entry.id);
    if (!li) {
      li = document.createElement("li");
      li.className = "history-item";
      const img = document.createElement("img");
      img.className = "history-thumb";
      img.width = THUMB;
      img.height = THUMB;
      img.alt = "";
      const answer = document.createElement("span");
      answer.className = "history-answer";
      const meta = document.createElement("span");
      meta.className = "history-meta";
      const time = document.createElement("time");
      const correction = document.createElement("span");
      correction.className = "history-correction";
      meta.append(document.createElement("span"), time);
      li.append(img, answer, meta, correction);
      nodes.set(entry.id, li);
    }
    const [img, answer, meta, correction] = li.children;
    if (!entry.thumbnail) img.removeAttribute("src");
    else if (img.getAttribute("src") !== entry.thumbnail) img.src = entry.thumbnail;
    img.alt = `drawing recognised as ${entry.answer}`;
    answer.textContent = entry.answer;
    const confidence =
      typeof entry.confidence === "number" ? `${(entry.confidence * 100).toFixed(1)}%` : "—";
    const version = entry.model_version == null ? "" : ` · model ${entry.model_version}`;
    meta.firstChild.textContent = `${confidence}${version} · `;
    const time = meta.lastChild;
    time.dateTime = entry.time || "";
    const date = new Date(entry.time);
    time.textContent = Number.isNaN(date.getTime()) ? "" : when.format(date);
    const right = entry.correction !== null && entry.correction !== undefined;
    correction.textContent = !right ? "" : entry.correction === entry.answer
      ? "✓ confirmed" : `corrected to ${entry.correction}`;
    li.classList.toggle("is-corrected", right && entry.correction !== entry.answer);
    return li;
  }

  function show(entry) {
    const li = node(entry);
    if (!li.isConnected) ui.list.prepend(li); // a new entry is the newest
    counts();
  }

  function renderAll() {
    const started = performance.now();
    const fragment = document.createDocumentFragment();
    for (let i = entries.length - 1; i >= 0; i--) fragment.append(node(entries[i]));
    ui.list.replaceChildren(fragment);
    counts();
    performance.measure("digits:history-render", { start: started });
  }

  function counts() {
    const n = entries.length;
    ui.count.textContent = n ? `(${n})` : "";
    ui.empty.hidden = n > 0;
    ui.csv.disabled = ui.json.disabled = ui.clear.disabled = n === 0;
  }

  // ------------------------------------------------------------------ export

  function cell(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number") return String(value);
    let text = String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`; // never a formula in a spreadsheet
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function toCSV() {
    const lines = [COLUMNS.join(",")];
    for (const entry of entries) lines.push(COLUMNS.map((c) => cell(entry[c])).join(","));
    return `\ufeff${lines.join("\r\n")}\r\n`; // the BOM: spreadsheets then read UTF-8
  }

  function toJSON() {
    return `${JSON.stringify(entries.map((e) => {
      const row = {};
      for (const c of COLUMNS) row[c] = e[c] === undefined ? null : e[c];
      row.thumbnail = e.thumbnail || null;
      return row;
    }), null, 2)}\n`;
  }

  function download(text, type, extension) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = document.createElement("a");
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
    link.href = url;
    link.download = `digit-history-${stamp}.${extension}`;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener("digits:answer", (event) => onAnswer(event.detail));
  document.addEventListener("digits:reset", () => {
    current = null;
  });
  document.addEventListener("digits:correction", (event) => {
    const detail = event.detail || {};
    correct(detail.label, detail.requestId);
  });
  ui.csv.addEventListener("click", () => download(toCSV(), "text/csv;charset=utf-8", "csv"));
  ui.json.addEventListener("click", () =>
    download(toJSON(), "application/json;charset=utf-8", "json"));
  ui.clear.addEventListener("click", clearHistory);
  // Another tab changed it: show that one.
  window.addEventListener("storage", (event) => {
    if (event.key !== KEY) return;
    entries = load();
    current = null;
    nodes.clear();
    renderAll();
  });
  // Never lose an answer to a deferred save when the page goes away.
  window.addEventListener("pagehide", () => saveTimer && save());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden" && saveTimer) save();
  });

  window.digitsHistory = {
    correct,
    entries: () => entries.map(stored),
    toCSV,
    toJSON,
    clear: clearHistory,
    max: MAX,
  };
  renderAll();
})();

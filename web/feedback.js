/* "Right?": every answer asks for its right digit, which POST /feedback keeps for training.
 *
 * - app.js announces each answer ("digits:answer": the answer, the PNG it was made from,
 *   its X-Request-ID) and each reset ("digits:reset"). One tap on "Yes", or on the right
 *   digit (keys Y and 0-9), labels that drawing; tapping the digit the model gave is a yes.
 * - Corrections wait in localStorage until the API has committed them (201, or 200 for a
 *   retry it already has: the request_id makes a resend harmless). They are sent one at
 *   a time, now, after a 503/429's Retry-After, when the browser comes back online, and
 *   on the next visit. A 4xx other than 429 means the correction can never be taken: it
 *   is dropped and the note says so.
 * - Committed ids are remembered with the version that answered. When an answer comes
 *   from a newer version (again at most every RECHECK_MS), GET /feedback/<id> tells
 *   whether a serving version has learned from them, and the note thanks the user:
 *   "learned from it in version N".
 */
"use strict";

(() => {
  const QUEUE_KEY = "digits.feedback.queue";
  const SENT_KEY = "digits.feedback.sent";
  const MAX_QUEUE = 100; // about 2 MB of PNG data URLs at most
  const MAX_SENT = 50;
  const RETRY_MS = [2000, 5000, 15000, 30000, 60000];
  // Workers report a new version in their heartbeats a moment after they serve it: ask
  // again about the same version, but not more often than this.
  const RECHECK_MS = 3000;

  const $ = (id) => document.getElementById(id);
  const panel = $("feedback");
  const question = $("feedback-question");
  const yes = $("feedback-yes");
  const note = $("feedback-note");
  const digitButtons = Array.from(panel.querySelectorAll("button[data-label]"));

  let current = null; // the answer being asked about: {answer, image, requestId}
  let sending = false;
  let retryTimer = 0;
  let failures = 0;
  let lastCheck = { version: null, at: 0 };

  // ------------------------------------------------------------------ storage

  function read(key) {
    try {
      const value = JSON.parse(localStorage.getItem(key) || "[]");
      return Array.isArray(value) ? value : [];
    } catch {
      return [];
    }
  }

  function write(key, list) {
    try {
      localStorage.setItem(key, JSON.stringify(list));
      return true;
    } catch {
      return false; // full or disabled: the correction lives only in memory
    }
  }

  let memoryQueue = read(QUEUE_KEY);

  function queue() {
    return memoryQueue;
  }

  function saveQueue(list) {
    memoryQueue = list.slice(-MAX_QUEUE);
    write(QUEUE_KEY, memoryQueue);
  }

  function newRequestId() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ------------------------------------------------------------------ asking

  function ask(detail) {
    current = detail;
    const answer = detail.answer;
    const known = readDigit(answer) !== null;
    question.textContent = known
      ? `Right? Model version ${answer.model_version} read it as ${answer.digit}.`
      : `Which digit is it? (model version ${answer.model_version})`;
    for (const button of digitButtons) {
      const digit = button.dataset.label;
      const own = Number(digit) === readDigit(answer);
      button.classList.toggle("is-answer", own);
      button.setAttribute("aria-label", own ? `Yes, ${digit}` : `No, it is ${digit}`);
      button.disabled = false;
    }
    yes.disabled = !known;
    panel.hidden = false;
    noteLearned(answer.model_version);
  }

  /** The digit the answer gave, or null (an 11-output model's "not a digit"). */
  function readDigit(answer) {
    const d = answer.digit;
    return Number.isInteger(d) && d >= 0 && d <= 9 && answer.is_digit !== false ? d : null;
  }

  function hide() {
    current = null;
    panel.hidden = true;
  }

  function label(digit) {
    if (!current) return;
    const { answer, image, requestId } = current;
    current = null;
    yes.disabled = true;
    for (const button of digitButtons) button.disabled = true;
    const item = {
      image,
      label: digit,
      // 10: the not-a-digit output, when the model said so.
      predicted: readDigit(answer) ?? (answer.is_digit === false ? 10 : undefined),
      model_version: answer.model_version,
      request_id: requestId || newRequestId(),
    };
    saveQueue([...queue(), item]);
    question.textContent =
      digit === readDigit(answer) ? `Thanks: ${digit} it is.` : `Thanks: noted as ${digit}.`;
    flush();
  }

  // ------------------------------------------------------------------ sending

  async function flush() {
    if (sending) return;
    clearTimeout(retryTimer);
    retryTimer = 0;
    sending = true;
    try {
      while (queue().length) {
        const item = queue()[0];
        const outcome = await send(item);
        if (outcome.retryAfter) {
          schedule(outcome.retryAfter);
          setNote(`Correction kept on this device; sending it again in ` +
            `${Math.round(outcome.retryAfter / 1000)} s (${outcome.why}).`);
          return;
        }
        saveQueue(queue().filter((q) => q.request_id !== item.request_id));
        failures = 0;
        if (outcome.id != null) {
          remember({ id: outcome.id, version: item.model_version, learned: null });
          setNote(`Saved. Version ${item.model_version} answered; ` +
            "you will see here when a newer version has learned from it.");
        } else {
          setNote(`That correction could not be kept: ${outcome.why}.`, "error");
        }
      }
    } finally {
      sending = false;
    }
  }

  async function send(item) {
    let response;
    try {
      response = await fetch("/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(item),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch {
      return { retryAfter: backoff(), why: "the server could not be reached" };
    }
    const body = await response.json().catch(() => null);
    if (response.ok && body && typeof body.id === "number") return { id: body.id };
    if (response.status === 503 || response.status === 429 || response.status >= 500) {
      const seconds = Number(response.headers.get("Retry-After"));
      const wait = seconds > 0 ? Math.min(seconds * 1000, 120000) : backoff();
      return { retryAfter: wait, why: `HTTP ${response.status}` };
    }
    const message = (body && body.error && body.error.message) || `HTTP ${response.status}`;
    return { id: null, why: message };
  }

  function backoff() {
    const wait = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
    failures++;
    return wait;
  }

  function schedule(ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      retryTimer = 0;
      flush();
    }, ms);
  }

  // ------------------------------------------------------------------ "learned from it"

  function remember(entry) {
    write(SENT_KEY, [...read(SENT_KEY).filter((e) => e.id !== entry.id), entry].slice(-MAX_SENT));
  }

  async function noteLearned(version) {
    const now = Date.now();
    if (typeof version !== "number" ||
        (lastCheck.version === version && now - lastCheck.at < RECHECK_MS)) {
      return;
    }
    lastCheck = { version, at: now };
    const waiting = read(SENT_KEY).filter((e) => e.learned == null && e.version < version);
    for (const entry of waiting.slice(-10)) {
      let body = null;
      try {
        const response = await fetch(`/feedback/${entry.id}`, { cache: "no-store" });
        body = response.ok ? await response.json() : null;
        if (response.status === 404) entry.learned = 0; // gone (another database): stop asking
      } catch {
        return; // offline: ask again with the next newer answer
      }
      if (body && typeof body.learned_in === "number") {
        entry.learned = body.learned_in;
        setNote(`Thanks: learned from it in version ${body.learned_in}.`, "ok");
      }
      remember(entry);
    }
  }

  function setNote(text, tone) {
    note.textContent = text;
    note.classList.toggle("is-error", tone === "error");
    note.classList.toggle("is-ok", tone === "ok");
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener("digits:answer", (event) => ask(event.detail));
  document.addEventListener("digits:reset", hide);
  yes.addEventListener("click", () => {
    if (current && readDigit(current.answer) !== null) label(readDigit(current.answer));
  });
  for (const button of digitButtons) {
    button.addEventListener("click", () => label(Number(button.dataset.label)));
  }
  document.addEventListener("keydown", (event) => {
    if (!current || event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const target = event.target;
    if (target instanceof Element && target.closest("input, select, textarea")) return;
    if (/^[0-9]$/.test(event.key)) {
      event.preventDefault();
      label(Number(event.key));
    } else if ((event.key === "y" || event.key === "Y") && readDigit(current.answer) !== null) {
      event.preventDefault();
      label(readDigit(current.answer));
    }
  });
  window.addEventListener("online", () => flush());

  if (queue().length) {
    setNote(`${queue().length} correction(s) kept on this device; sending…`);
    flush();
  }
})();

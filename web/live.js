/* Live prediction for a drawing pad, shared by the digit pad (web/app.js, POST /predict)
 * and the number pad (web/number.js, POST /predict/number).
 *
 * - changed(): the drawing changed; ask about it DEBOUNCE_MS after the last change.
 * - request("manual" | "live"): ask now, or as soon as the request in flight returns.
 *   At most one request is in flight; each carries a sequence number and the drawing
 *   version it was made from, and an answer about an older drawing is dropped (the newer
 *   drawing is then sent instead).
 * - forget(): the drawing is gone (Clear, or Undo of the last stroke): timers stop and
 *   answers still on their way are dropped.
 * - retryAfter(seconds, kind): ask again later (after a 429).
 */
"use strict";

(() => {
  const DEBOUNCE_MS = 200;
  const REQUEST_TIMEOUT_MS = 15000; // the API answers 504 itself after ~5 s

  /** The body of an answer: its JSON, or null (an empty or non-JSON body). */
  function readBody(response) {
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) return response.json().catch(() => null);
    return response.text().then(
      () => null,
      () => null,
    );
  }

  /**
   * url: where the drawing goes; image(): the drawing as a data URL; hasInk(): whether
   * there is anything to send live; onSend(kind): a request leaves;
   * onAnswer(sent, elapsed, response, body, error): the answer about the current drawing
   * ({seq, version, kind, image} as sent; response and body null on a network error).
   */
  function live({ url, image, hasInk, onSend, onAnswer }) {
    let version = 0; // bumped on every change to the drawing
    let seq = 0;
    let discardBefore = 0; // answers to requests with seq < this are dropped
    let inFlight = null; // {seq, version, kind, image}
    let wanted = null; // "live" | "manual": to send when the request in flight returns
    let debounceTimer = 0;
    let retryTimer = 0;

    function changed() {
      version++;
      clearTimeout(debounceTimer);
      debounceTimer = setTimeout(() => {
        debounceTimer = 0;
        request("live");
      }, DEBOUNCE_MS);
    }

    function forget() {
      version++;
      clearTimeout(debounceTimer);
      clearTimeout(retryTimer);
      debounceTimer = retryTimer = 0;
      discardBefore = seq + 1; // any answer still on its way is about the old drawing
      wanted = null;
    }

    function retryAfter(seconds, kind) {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => {
        retryTimer = 0;
        request(kind === "manual" ? "manual" : "live");
      }, seconds * 1000);
    }

    function request(kind) {
      if (kind === "manual") {
        clearTimeout(debounceTimer);
        debounceTimer = 0;
      }
      if (kind === "live" && !hasInk()) return; // an empty canvas is not sent live
      if (inFlight) {
        if (wanted !== "manual") wanted = kind;
        return;
      }
      send(kind);
    }

    function send(kind) {
      clearTimeout(retryTimer);
      retryTimer = 0;
      const sent = { seq: ++seq, version, kind, image: image() };
      inFlight = sent;
      if (onSend) onSend(kind);
      const started = performance.now();
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
      fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ image: sent.image }),
        cache: "no-store",
        credentials: "same-origin",
        signal: controller.signal,
      })
        .then((response) => readBody(response).then((body) => ({ response, body })))
        .then(
          ({ response, body }) => settle(sent, performance.now() - started, response, body, null),
          (error) => settle(sent, performance.now() - started, null, null, error),
        )
        .finally(() => clearTimeout(timer));
    }

    function settle(sent, elapsed, response, body, error) {
      inFlight = null;
      const next = wanted;
      wanted = null;
      if (sent.seq < discardBefore || sent.version !== version) {
        // A stale answer: the drawing changed since. Drop it and ask about the new one
        // (unless the debounce timer is about to).
        if (!debounceTimer && (hasInk() || next === "manual")) {
          request(next === "manual" ? "manual" : "live");
        }
        return;
      }
      // Whatever was wanted meanwhile (a click, a retry) was about this very drawing,
      // which has just been answered.
      onAnswer(sent, elapsed, response, body, error);
    }

    return { changed, forget, request, retryAfter, busy: () => inFlight !== null };
  }

  window.digits = Object.assign(window.digits || {}, { live, readBody });
})();

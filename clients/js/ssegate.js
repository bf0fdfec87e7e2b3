// @ts-check
/**
 * ssegate's browser client: a resilient event-stream reader and helpers for the generation gateway.
 *
 * No dependencies and no build step: `import { createGatewayClient } from "/static/ssegate.js"`.
 *
 * - `openEventStream(url, options)` reads an event stream over `fetch` (any method, a body, headers such
 *   as Authorization) or over the native `EventSource` (GET only). It resumes after a drop with
 *   `Last-Event-ID` after the server's `retry:` delay, growing with capped exponential backoff and jitter,
 *   and never sooner than a `Retry-After` asks; stops on 204, on a terminal event, on a fatal HTTP status
 *   or when its AbortSignal fires. A refused request that would start something (not a GET) is not sent
 *   again, except once after a 429 with a short `Retry-After`. Over fetch, an idle timeout that any
 *   received byte (keep-alive comments included) resets notices a dead connection; EventSource hides
 *   comments, so there it is off unless asked for. Events arrive through callbacks and an async iterator.
 * - `createGatewayClient()` speaks ssegate's `/v1/generations` API: generate, startGeneration, follow,
 *   cancel, state, providers.
 *
 * @module ssegate
 */

import { createParser } from "./sse-parser.js";

export { createParser };

/** @typedef {import("./sse-parser.js").SSEEvent} SSEEvent */

/**
 * Where a stream is in its life; shown to people as a connection indicator.
 * @typedef {"connecting" | "open" | "reconnecting" | "closed"} StreamState
 */

/**
 * @typedef {object} StreamOptions
 * @property {string} [method]                  HTTP method of the first request (default GET)
 * @property {Record<string, string>} [headers] sent with every request
 * @property {string | null} [body]             body of the first request
 * @property {string} [lastEventId]             resume after this event ID from the very first request
 * @property {AbortSignal} [signal]             stops the stream for good
 * @property {"fetch" | "eventsource"} [transport]  default "fetch"; "eventsource" needs GET, no headers
 * @property {string[]} [eventTypes]            event types to listen for with EventSource (named events)
 * @property {number} [retryMs]                 reconnection delay until the server sends `retry:` (1000)
 * @property {number} [maxRetryMs]              cap of the exponential backoff (30000)
 * @property {number} [maxAttempts]             give up after this many failed reconnects in a row (Infinity)
 * @property {number} [idleTimeoutMs]           reconnect when nothing arrives for this long; 0 = off.
 *   fetch: default 45000, and any byte resets it, keep-alive comments included. eventsource: default 0,
 *   because EventSource never shows comments, so only events reset it: set it only for a stream whose
 *   events come more often than that (keep-alives alone would not keep a quiet stream open)
 * @property {(event: SSEEvent) => boolean} [isTerminal]  an event after which the stream is complete
 * @property {(event: SSEEvent) => void} [onEvent]
 * @property {(info: {response: Response | null, url: string, attempt: number}) => void} [onOpen]
 * @property {(state: StreamState) => void} [onStateChange]
 * @property {(text: string) => void} [onComment]
 * @property {(info: {error: unknown, delayMs: number, attempt: number}) => void} [onReconnect]
 * @property {typeof fetch} [fetch]             the fetch to use (default globalThis.fetch)
 * @property {() => number} [random]            jitter source in [0, 1) (default Math.random)
 * @property {boolean} [resendOnDrop]           re-send a non-GET request whose connection failed before
 *   the server answered with a Location to resume from (default false: it could repeat a side effect)
 */

/**
 * How a stream ended.
 * @typedef {object} StreamResult
 * @property {"terminal" | "no-content" | "aborted" | "closed"} reason
 *   a terminal event arrived · the server answered 204 (nothing more to send) · the signal fired ·
 *   `close()` was called
 * @property {string} lastEventId
 */

/**
 * An HTTP answer that reconnecting cannot fix: a 4xx other than 408/429 (any 4xx for a request that
 * starts something), or not an event stream. Also the `cause` of a StreamGaveUpError when the last
 * attempt got an HTTP error.
 */
export class StreamHTTPError extends Error {
  /**
   * @param {string} message
   * @param {number} status
   * @param {unknown} [body]
   * @param {number | null} [retryAfterMs]  the answer's Retry-After, in ms
   */
  constructor(message, status, body, retryAfterMs = null) {
    super(message);
    this.name = "StreamHTTPError";
    this.status = status;
    this.body = body;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The stream kept failing: `maxAttempts` reconnects in a row did not deliver anything. `cause` is the
 * last attempt's error (a StreamHTTPError when the server answered; see explainStreamError).
 */
export class StreamGaveUpError extends Error {
  /**
   * @param {string} message
   * @param {unknown} cause
   */
  constructor(message, cause) {
    super(message, { cause });
    this.name = "StreamGaveUpError";
  }
}

/** The connection stopped delivering bytes, even keep-alive comments, for longer than allowed. */
class IdleTimeoutError extends Error {
  constructor() {
    super("no data (not even a keep-alive) within the idle timeout");
    this.name = "IdleTimeoutError";
  }
}

/** Statuses worth retrying: the server or something in between may answer differently later. */
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
/**
 * A 429 to a request that starts something is sent once more only when the wait is this short; a longer
 * one (a rate limit counted per minute) is for the person to see, not for the client to sit out.
 */
const SHORT_RETRY_AFTER_MS = 5000;

/**
 * An open event stream. Iterate it (`for await (const event of stream)`), or pass callbacks.
 */
export class EventStream {
  /**
   * @param {string} url
   * @param {StreamOptions} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    /** @type {StreamState} */
    this.state = "connecting";
    this.lastEventId = options.lastEventId ?? "";
    /** @type {Response | null} the latest HTTP response (fetch transport) */
    this.response = null;
    /** @private */
    this._controller = new AbortController();
    /** @private */
    this._closedByUser = false;
    /** @private @type {SSEEvent[]} events not yet taken by the iterator (kept only once one is asked for) */
    this._queue = [];
    /** @private */
    this._iterated = false;
    /** @private @type {((value: void) => void) | null} */
    this._wake = null;
    /** @private @type {StreamResult | null} */
    this._result = null;
    /** @private @type {unknown} */
    this._error = null;
    /** @private */
    this._finished = false;
    /** @private */
    this._resentAfterRefusal = false;
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) this._controller.abort();
      else signal.addEventListener("abort", () => this._controller.abort(), { once: true });
    }
    /** Settles when the stream ends: resolves with how, rejects on a fatal error. */
    this.done = this._run().then(
      (result) => {
        this._result = result;
        this._finish();
        return result;
      },
      (error) => {
        this._error = error;
        this._finish();
        throw error;
      },
    );
    // The iterator or the caller reports the error; an unobserved `done` must not crash the page.
    this.done.catch(() => {});
  }

  /** Stop reading for good (the server is not told; for a generation, use cancel() for that). */
  close() {
    this._closedByUser = true;
    this._controller.abort();
  }

  /**
   * Events in order. Ask for the iterator before awaiting anything else (as `for await` does), or
   * events that arrive first are only seen by `onEvent`; with callbacks alone nothing is buffered.
   * @returns {AsyncIterator<SSEEvent>}
   */
  [Symbol.asyncIterator]() {
    this._iterated = true;
    return {
      next: async () => {
        for (;;) {
          const event = this._queue.shift();
          if (event) return { value: event, done: false };
          if (this._finished) {
            if (this._error) throw this._error;
            return { value: undefined, done: true };
          }
          await new Promise((resolve) => {
            this._wake = resolve;
          });
        }
      },
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }

  /** @private */
  _finish() {
    this._finished = true;
    this._setState("closed");
    this._notify();
  }

  /** @private */
  _notify() {
    const wake = this._wake;
    this._wake = null;
    if (wake) wake();
  }

  /** @private @param {StreamState} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.options.onStateChange?.(state);
  }

  /** @private @param {SSEEvent} event */
  _deliver(event) {
    if (this._iterated) this._queue.push(event);
    this._notify();
    this.options.onEvent?.(event);
  }

  /** @private @returns {Promise<StreamResult>} */
  async _run() {
    const options = this.options;
    let retryMs = options.retryMs ?? 1000;
    const maxRetryMs = options.maxRetryMs ?? 30000;
    const maxAttempts = options.maxAttempts ?? Number.POSITIVE_INFINITY;
    const random = options.random ?? Math.random;
    let failures = 0;
    /** @type {{url: string, method: string, body: string | null}} */
    let request = { url: this.url, method: options.method ?? "GET", body: options.body ?? null };
    const signal = this._controller.signal;

    for (let attempt = 0; ; attempt += 1) {
      if (signal.aborted) return this._stopped();
      /** @type {ConnectionOutcome} */
      let outcome;
      try {
        outcome =
          options.transport === "eventsource"
            ? await this._readEventSource(request.url, attempt)
            : await this._readFetch(request, attempt, (ms) => {
                retryMs = ms;
              });
      } catch (error) {
        if (signal.aborted) return this._stopped();
        if (error instanceof StreamHTTPError || error instanceof StreamGaveUpError) throw error;
        outcome = { kind: "dropped", error, delivered: false, next: null };
      }
      if (outcome.kind === "terminal") return { reason: "terminal", lastEventId: this.lastEventId };
      if (outcome.kind === "no-content") return { reason: "no-content", lastEventId: this.lastEventId };
      if (outcome.next) request = outcome.next;
      if (signal.aborted) return this._stopped();
      // A connection that delivered something was healthy: start the backoff afresh.
      failures = outcome.delivered ? 0 : failures + 1;
      if (failures >= maxAttempts) {
        throw new StreamGaveUpError(`gave up after ${failures} failed attempts`, outcome.error);
      }
      // The server's Retry-After is a floor: coming back sooner only earns the same answer.
      const delayMs = Math.max(backoffDelay(retryMs, failures, maxRetryMs, random), retryAfterOf(outcome.error));
      this._setState("reconnecting");
      options.onReconnect?.({ error: outcome.error, delayMs, attempt: attempt + 1 });
      await sleep(delayMs, signal);
    }
  }

  /** @private @returns {StreamResult} */
  _stopped() {
    return { reason: this._closedByUser ? "closed" : "aborted", lastEventId: this.lastEventId };
  }

  /**
   * One fetch connection, read until it ends.
   * @param {{url: string, method: string, body: string | null}} request
   * @param {number} attempt
   * @param {(ms: number) => void} setRetry
   * @returns {Promise<ConnectionOutcome>}
   * @private
   */
  async _readFetch(request, attempt, setRetry) {
    const options = this.options;
    const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    const connection = new AbortController();
    const stop = () => connection.abort();
    this._controller.signal.addEventListener("abort", stop, { once: true });
    /** @type {Record<string, string>} */
    const headers = { Accept: "text/event-stream", ...options.headers };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    let delivered = false;
    let terminal = false;
    /** @type {{url: string, method: string, body: string | null} | null} */
    let next = null;
    const idle = createIdleTimer(options.idleTimeoutMs ?? FETCH_IDLE_TIMEOUT_MS, () =>
      connection.abort(new IdleTimeoutError()),
    );
    try {
      idle.reset();
      const response = await doFetch(request.url, {
        method: request.method,
        headers,
        body: request.body,
        signal: connection.signal,
        cache: "no-store",
      });
      this.response = response;
      // Reconnects read the stream with GET from where the server said it lives (Location), so a POST
      // that created something is never sent twice.
      next = resumeRequest(request, response);
      if (response.status === 204) return { kind: "no-content", error: null, delivered, next };
      if (!response.ok) {
        const body = await readErrorBody(response);
        const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
        const error = new StreamHTTPError(`HTTP ${response.status}`, response.status, body, retryAfterMs);
        if (this._mayRetry(request, response.status, retryAfterMs)) return { kind: "dropped", error, delivered, next };
        throw error;
      }
      const contentType = response.headers.get("content-type") ?? "";
      if (!contentType.toLowerCase().startsWith("text/event-stream")) {
        throw new StreamHTTPError(`expected text/event-stream, got "${contentType}"`, response.status);
      }
      if (!response.body) throw new StreamHTTPError("response has no body", response.status);
      this._setState("open");
      options.onOpen?.({ response, url: response.url || request.url, attempt });
      const parser = createParser({
        lastEventId: this.lastEventId,
        onEvent: (event) => {
          delivered = true;
          this.lastEventId = event.id;
          if (terminal) return;
          this._deliver(event);
          if (options.isTerminal?.(event)) terminal = true;
        },
        onRetry: (ms) => setRetry(ms),
        onComment: (text) => options.onComment?.(text),
      });
      const reader = response.body.getReader();
      try {
        while (!terminal) {
          const { value, done } = await reader.read();
          if (done) break;
          idle.reset();
          parser.feedBytes(value);
          // An id-only block moves the resume point without an event.
          this.lastEventId = parser.lastEventId();
        }
      } finally {
        reader.cancel().catch(() => {});
      }
      parser.end();
      if (terminal) return { kind: "terminal", error: null, delivered, next };
      return { kind: "dropped", error: new Error("the stream ended early"), delivered, next };
    } catch (error) {
      if (error instanceof StreamHTTPError) throw error;
      const reason = connection.signal.reason;
      const cause = reason instanceof IdleTimeoutError ? reason : error;
      if (!next && request.method !== "GET" && !options.resendOnDrop) {
        // Sending a POST again could start a second generation; without a Location to read it back,
        // failing is the honest answer.
        throw new StreamGaveUpError("the connection failed before the server named the stream", cause);
      }
      return { kind: "dropped", error: cause, delivered, next };
    } finally {
      idle.stop();
      this._controller.signal.removeEventListener("abort", stop);
    }
  }

  /**
   * Whether an HTTP error answer is worth another try. A read (GET) is, for the retryable statuses. The
   * request that starts something is refused for a reason a person should see (a rate limit, a missing
   * key, a prompt too large): a 4xx is final, except a 429 asking for a short wait, sent once more.
   * Of the 5xx only a 503 is sent again: ssegate answers it before it starts anything (draining, its
   * log out of reach), while a 500, or a proxy's 502 or 504, may come after the generation started,
   * and sending it again would start (and pay for) a second one.
   * @param {{method: string}} request
   * @param {number} status
   * @param {number | null} retryAfterMs
   * @returns {boolean}
   * @private
   */
  _mayRetry(request, status, retryAfterMs) {
    if (!RETRYABLE_STATUS.has(status)) return false;
    if (request.method === "GET" || status === 503) return true;
    if (status !== 429 || this._resentAfterRefusal) return false;
    if (retryAfterMs === null || retryAfterMs > SHORT_RETRY_AFTER_MS) return false;
    this._resentAfterRefusal = true;
    return true;
  }

  /**
   * One native EventSource, read until it closes. The browser reconnects by itself (sending
   * Last-Event-ID) while readyState is CONNECTING; it gives up (CLOSED) on 204 or an HTTP error.
   * @param {string} url
   * @param {number} attempt
   * @returns {Promise<ConnectionOutcome>}
   * @private
   */
  _readEventSource(url, attempt) {
    const options = this.options;
    const target = new URL(url, globalThis.location?.href);
    // EventSource cannot send headers: a resume point goes in the query string instead.
    if (this.lastEventId) target.searchParams.set("last_event_id", this.lastEventId);
    return new Promise((resolve) => {
      const source = new EventSource(target.href);
      let delivered = false;
      /** @param {ConnectionOutcome} outcome */
      const finish = (outcome) => {
        idle.stop();
        source.close();
        this._controller.signal.removeEventListener("abort", onAbort);
        resolve(outcome);
      };
      // Off by default: EventSource never shows keep-alive comments, so a quiet but healthy stream
      // would look dead (the browser itself reconnects after a drop it can see).
      const idle = createIdleTimer(options.idleTimeoutMs ?? 0, () =>
        finish({ kind: "dropped", error: new IdleTimeoutError(), delivered, next: null }),
      );
      const onAbort = () => finish({ kind: "dropped", error: null, delivered, next: null });
      this._controller.signal.addEventListener("abort", onAbort, { once: true });
      idle.reset();
      source.onopen = () => {
        idle.reset();
        this._setState("open");
        options.onOpen?.({ response: null, url: target.href, attempt });
      };
      /** @param {Event} message */
      const onMessage = (message) => {
        // The name trap: EventSource fires its own `error` (a plain Event, no data) on every
        // connection problem, under the same name as ssegate's `error` event (a MessageEvent with
        // data). Only a MessageEvent is the server's; the other is handled by onConnectionError.
        if (!(message instanceof MessageEvent)) return;
        idle.reset();
        delivered = true;
        this.lastEventId = message.lastEventId;
        const event = { type: message.type, data: String(message.data), id: message.lastEventId };
        this._deliver(event);
        if (options.isTerminal?.(event)) finish({ kind: "terminal", error: null, delivered, next: null });
      };
      for (const type of new Set(["message", ...(options.eventTypes ?? [])])) {
        source.addEventListener(type, onMessage);
      }
      /** @param {Event} event */
      const onConnectionError = (event) => {
        if (event instanceof MessageEvent) return; // the server's `error` event, delivered above
        if (source.readyState === EventSource.CLOSED) {
          // A 204 and an HTTP error look the same here; after a terminal event the server answers 204.
          finish({ kind: "no-content", error: null, delivered, next: null });
        } else {
          this._setState("reconnecting");
        }
      };
      source.addEventListener("error", onConnectionError);
    });
  }
}

/**
 * @typedef {object} ConnectionOutcome
 * @property {"terminal" | "no-content" | "dropped"} kind
 * @property {unknown} error
 * @property {boolean} delivered  at least one event arrived on this connection
 * @property {{url: string, method: string, body: string | null} | null} next  the request for a reconnect
 */

/**
 * Open an event stream (see EventStream). Convenience for `new EventStream(url, options)`.
 * @param {string} url
 * @param {StreamOptions} [options]
 * @returns {EventStream}
 */
export function openEventStream(url, options) {
  return new EventStream(url, options);
}

/**
 * The delay before reconnect number `failures`: the server's retry time, doubled per failure in a row,
 * capped, then scaled by a random factor in [0.5, 1) so many clients dropped together do not return
 * together.
 * @param {number} retryMs
 * @param {number} failures  0 after a healthy connection
 * @param {number} maxRetryMs
 * @param {() => number} random
 * @returns {number}
 */
export function backoffDelay(retryMs, failures, maxRetryMs, random) {
  const base = Math.min(maxRetryMs, retryMs * 2 ** Math.min(failures, 30));
  return Math.round(base * (0.5 + random() / 2));
}

/**
 * @param {{url: string, method: string, body: string | null}} request
 * @param {Response} response
 * @returns {{url: string, method: string, body: string | null}}
 */
function resumeRequest(request, response) {
  const location = response.headers.get("location");
  if (request.method === "GET" || !location) return request;
  return { url: new URL(location, response.url || request.url).href, method: "GET", body: null };
}

/** Default idle timeout over fetch, where keep-alive comments (every 15 s from ssegate) reset it. */
const FETCH_IDLE_TIMEOUT_MS = 45000;

/**
 * A Retry-After header (delay-seconds or an HTTP date) in ms, or null.
 * @param {string | null} value
 * @returns {number | null}
 */
export function parseRetryAfter(value) {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

/**
 * @param {unknown} error
 * @returns {number}
 */
function retryAfterOf(error) {
  return error instanceof StreamHTTPError && error.retryAfterMs !== null ? error.retryAfterMs : 0;
}

/**
 * @param {Response} response
 * @returns {Promise<unknown>}
 */
async function readErrorBody(response) {
  const text = await response.text().catch(() => "");
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * @param {number} timeoutMs
 * @param {() => void} onIdle
 */
function createIdleTimer(timeoutMs, onIdle) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  return {
    reset() {
      clearTimeout(timer);
      if (timeoutMs > 0) timer = setTimeout(onIdle, timeoutMs);
    },
    stop() {
      clearTimeout(timer);
    },
  };
}

/**
 * @param {number} ms
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

// ---------------------------------------------------------------------------------------------------------
// The generation gateway
// ---------------------------------------------------------------------------------------------------------

/** Event types the gateway sends; `done` and `error` end a generation. */
export const GENERATION_EVENT_TYPES = Object.freeze([
  "start",
  "text",
  "thinking",
  "tool_call",
  "status",
  "usage",
  "data",
  "reset",
  "done",
  "error",
]);

/**
 * The payloads of the generation events (docs/wire-format.md).
 * @typedef {{id: string, model: string, provider: string}} StartData
 * @typedef {{delta: string}} DeltaData  a piece of the answer (`text`) or of the reasoning (`thinking`)
 * @typedef {{phase: "start", id: string, name: string, index: number}
 *   | {phase: "delta", id: string, delta: string}
 *   | {phase: "end", id: string, name: string, input: unknown}} ToolCallData  `delta` is a piece of
 *   the arguments' JSON text; `end` carries the whole call (its name and its parsed arguments)
 * @typedef {{stage: string, model?: string, [field: string]: unknown}} StatusData
 * @typedef {{input_tokens: number | null, output_tokens: number | null}} UsageData
 * @typedef {{name: string, value: unknown}} DataData  anything else an app's own producer sends
 * @typedef {{reason: string}} ResetData  the resume point was lost; the stream starts over
 * @typedef {{finish_reason: string, usage?: UsageData, reason?: string}} DoneData
 *   finish_reason `stop`, `length`, `tool_use`, `content_filter` or `cancelled` (then `reason`
 *   `cancelled`, `abandoned` or `shutdown`)
 * @typedef {{code: string, message: string, retryable: boolean}} ErrorData
 *   the generation failed: the server's word, never a connection problem (see GenerationEvent)
 */

/**
 * One event of a generation, its `data` parsed; `type` tells which payload `data` holds, so in
 * TypeScript `if (event.type === "error") event.data.code` type-checks.
 *
 * `type: "error"` is always ssegate's `error` event: the generation failed, and it is over. A lost
 * connection is never delivered as an event (a native EventSource fires its own `error` for that,
 * under the same name; this client keeps the two apart): the stream reconnects by itself and reports
 * it through `onStateChange` ("reconnecting") and `onReconnect`, and rejects `done` if it gives up.
 * @typedef {{type: "start", id: string, data: StartData}
 *   | {type: "text" | "thinking", id: string, data: DeltaData}
 *   | {type: "tool_call", id: string, data: ToolCallData}
 *   | {type: "status", id: string, data: StatusData}
 *   | {type: "usage", id: string, data: UsageData}
 *   | {type: "data", id: string, data: DataData}
 *   | {type: "reset", id: string, data: ResetData}
 *   | {type: "done", id: string, data: DoneData}
 *   | {type: "error", id: string, data: ErrorData}} GenerationEvent
 */

/**
 * @typedef {object} Message
 * @property {"user" | "assistant"} role
 * @property {string} content
 */

/**
 * @typedef {object} GenerationRequest
 * @property {Message[]} messages
 * @property {string} [system]
 * @property {string} [model]
 * @property {string} [provider]
 * @property {number} [max_tokens]
 * @property {boolean} [keep_running]
 */

/**
 * @typedef {object} FollowOptions
 * @property {string} [lastEventId]  resume after this id; omit to receive the whole generation
 * @property {AbortSignal} [signal]
 * @property {(event: GenerationEvent) => void} [onEvent]
 * @property {(state: StreamState) => void} [onStateChange]
 * @property {(info: {error: unknown, delayMs: number, attempt: number}) => void} [onReconnect]
 * @property {(generationId: string) => void} [onGenerationId]  the id, as soon as the server names it
 * @property {number} [idleTimeoutMs]
 * @property {number} [maxAttempts]
 * @property {"fetch" | "eventsource"} [transport]
 */

/**
 * A gateway answer that is an error (`{error: {code, message, …}}` with a 4xx/5xx status).
 * `details` holds the error object's other fields (`retry_after`, `field`, `limit`, …).
 */
export class GatewayError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} status
   * @param {{retryAfterMs?: number | null, details?: Record<string, unknown>}} [extra]
   */
  constructor(code, message, status, extra = {}) {
    super(message);
    this.name = "GatewayError";
    this.code = code;
    this.status = status;
    /** how long the server asked to wait before trying again (Retry-After), or null */
    this.retryAfterMs = extra.retryAfterMs ?? null;
    this.details = extra.details ?? {};
  }
}

/**
 * A generation being read: an async iterable of GenerationEvents with the generation's id.
 */
export class GenerationStream {
  /**
   * @param {EventStream} stream
   * @param {string | null} generationId
   */
  constructor(stream, generationId) {
    this.stream = stream;
    /** @type {string | null} known at once for follow(), after the response headers for generate() */
    this.generationId = generationId;
    /** Resolves with the last event (`done` or `error`), or null when the stream stopped before one. */
    this.done = stream.done.then(() => this._terminal);
    this.done.catch(() => {});
    /** @type {GenerationEvent | null} */
    this._terminal = null;
  }

  close() {
    this.stream.close();
  }

  /** @returns {AsyncIterator<GenerationEvent>} */
  [Symbol.asyncIterator]() {
    const inner = this.stream[Symbol.asyncIterator]();
    return {
      next: async () => {
        const result = await inner.next();
        if (result.done) return { value: undefined, done: true };
        return { value: toGenerationEvent(result.value), done: false };
      },
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }
}

/**
 * @param {SSEEvent} event
 * @returns {GenerationEvent}
 */
export function toGenerationEvent(event) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    data = event.data;
  }
  // The server's vocabulary (GENERATION_EVENT_TYPES): the type names the payload.
  return /** @type {GenerationEvent} */ ({ type: event.type, id: event.id, data });
}

/**
 * Whether a generation event is ssegate's `error` event (the generation failed), narrowing its type.
 * A connection problem never is one: see GenerationEvent.
 * @param {GenerationEvent} event
 * @returns {event is {type: "error", id: string, data: ErrorData}}
 */
export function isGenerationError(event) {
  return event.type === "error";
}

/**
 * @param {SSEEvent} event
 * @returns {boolean}
 */
function isGenerationTerminal(event) {
  return event.type === "done" || event.type === "error";
}

/**
 * @typedef {ReturnType<typeof createGatewayClient>} GatewayClient  what createGatewayClient returns
 */

/**
 * A client for ssegate's generation API.
 * @param {{baseUrl?: string, headers?: Record<string, string>, fetch?: typeof fetch}} [config]
 */
export function createGatewayClient(config = {}) {
  const baseUrl = (config.baseUrl ?? "").replace(/\/+$/, "");
  const headers = config.headers ?? {};
  const doFetch = config.fetch ?? globalThis.fetch.bind(globalThis);
  /** @param {string} path */
  const url = (path) => `${baseUrl}${path}`;
  /** @param {string} id */
  const generationPath = (id) => `/v1/generations/${encodeURIComponent(id)}`;

  /**
   * @param {string} path
   * @param {RequestInit} [init]
   * @returns {Promise<any>}
   */
  async function requestJSON(path, init = {}) {
    const response = await doFetch(url(path), {
      ...init,
      headers: { Accept: "application/json", ...headers, ...init.headers },
    });
    const text = await response.text();
    /** @type {any} */
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = text;
    }
    if (!response.ok) {
      throw gatewayErrorFrom(response.status, body, parseRetryAfter(response.headers.get("retry-after")));
    }
    return body;
  }

  /**
   * @param {string} streamUrl
   * @param {StreamOptions} streamOptions
   * @param {FollowOptions} options
   * @param {string | null} generationId
   * @returns {GenerationStream}
   */
  function openGeneration(streamUrl, streamOptions, options, generationId) {
    /** @type {GenerationStream} */
    let generation;
    const stream = new EventStream(streamUrl, {
      ...streamOptions,
      headers: { ...headers, ...streamOptions.headers },
      lastEventId: options.lastEventId,
      signal: options.signal,
      transport: options.transport,
      idleTimeoutMs: options.idleTimeoutMs,
      maxAttempts: options.maxAttempts,
      eventTypes: [...GENERATION_EVENT_TYPES],
      isTerminal: isGenerationTerminal,
      fetch: doFetch,
      onStateChange: options.onStateChange,
      onReconnect: options.onReconnect,
      onOpen: ({ response }) => {
        const id = response?.headers.get("x-generation-id");
        if (id && !generation.generationId) {
          generation.generationId = id;
          options.onGenerationId?.(id);
        }
      },
      onEvent: (event) => {
        const parsed = toGenerationEvent(event);
        if (isGenerationTerminal(event)) generation._terminal = parsed;
        options.onEvent?.(parsed);
      },
    });
    generation = new GenerationStream(stream, generationId);
    return generation;
  }

  return {
    /**
     * Create a generation (201): `{id, events_url, cancel_url, …}`, plus `stream_token` when the server
     * has API keys (a token that only watches this generation: for a link or an EventSource URL).
     * Read it with follow().
     * @param {GenerationRequest} request
     * @param {{signal?: AbortSignal}} [options]
     * @returns {Promise<{id: string, events_url: string, cancel_url: string, stream_token?: string}>}
     */
    startGeneration(request, options = {}) {
      return requestJSON("/v1/generations", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
        signal: options.signal,
      });
    },

    /**
     * Create a generation and read it in the same request (saves a round trip before the first token).
     * Reconnects follow the stream's Location with GET and Last-Event-ID.
     * @param {GenerationRequest} request
     * @param {FollowOptions} [options]
     * @returns {GenerationStream}
     */
    generate(request, options = {}) {
      return openGeneration(
        url("/v1/generations"),
        {
          method: "POST",
          body: JSON.stringify(request),
          headers: { "Content-Type": "application/json" },
          transport: "fetch",
        },
        { ...options, transport: "fetch" },
        null,
      );
    },

    /**
     * Read a generation: from its start (a late joiner sees it all), or after `lastEventId`.
     * @param {string} id
     * @param {FollowOptions} [options]
     * @returns {GenerationStream}
     */
    follow(id, options = {}) {
      return openGeneration(url(`${generationPath(id)}/events`), {}, options, id);
    },

    /**
     * Stop a generation upstream (202). Every viewer then receives `done` with finish_reason "cancelled".
     * @param {string} id
     * @returns {Promise<unknown>}
     */
    cancel(id) {
      return requestJSON(`${generationPath(id)}/cancel`, { method: "POST" });
    },

    /**
     * A generation's state: `{id, state, model, provider, finish_reason, usage, viewers, ...}`.
     * @param {string} id
     * @returns {Promise<any>}
     */
    state(id) {
      return requestJSON(generationPath(id));
    },

    /**
     * The configured providers, `[{name, default_model}]`; an empty list when the server has no such route.
     * @returns {Promise<{name: string, default_model: string}[]>}
     */
    async providers() {
      try {
        const body = await requestJSON("/v1/providers");
        return Array.isArray(body) ? body : [];
      } catch (error) {
        if (error instanceof GatewayError && error.status === 404) return [];
        throw error;
      }
    },
  };
}

/**
 * @param {number} status
 * @param {any} body
 * @param {number | null} [retryAfterMs]  from the Retry-After header
 * @returns {GatewayError}
 */
function gatewayErrorFrom(status, body, retryAfterMs = null) {
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error === "object") {
    const { code, message, ...details } = error;
    // The body's retry_after (seconds) says the same as the header, which a CORS page may not see.
    const wait = typeof details.retry_after === "number" ? details.retry_after * 1000 : retryAfterMs;
    return new GatewayError(String(code ?? "http_error"), String(message ?? ""), status, {
      retryAfterMs: wait,
      details,
    });
  }
  return new GatewayError("http_error", `HTTP ${status}`, status, { retryAfterMs });
}

/**
 * Turn the error a stream failed with into a GatewayError when the server's answer says more: an HTTP
 * error (StreamHTTPError), also when it is the last attempt behind a StreamGaveUpError. Anything else
 * (a network failure, an abort) comes back unchanged.
 * @param {unknown} error
 * @returns {unknown}
 */
export function explainStreamError(error) {
  const answer = error instanceof StreamGaveUpError && error.cause instanceof StreamHTTPError ? error.cause : error;
  if (answer instanceof StreamHTTPError && answer.status >= 400) {
    return gatewayErrorFrom(answer.status, answer.body, answer.retryAfterMs);
  }
  return error;
}

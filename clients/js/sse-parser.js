// @ts-check
/**
 * An incremental event-stream parser following the WHATWG HTML "server-sent events" parsing rules.
 *
 * Pure: text in, callbacks out; no IO, no timers, no DOM. The fetch glue lives in ssegate.js.
 * It follows the same rules, and passes the same test vectors, as the Python codec
 * (ssegate.codec.parser).
 *
 * @module sse-parser
 */

/**
 * A dispatched event, as a browser's MessageEvent would carry it.
 * @typedef {object} SSEEvent
 * @property {string} type  the `event:` field, "message" when absent or empty
 * @property {string} data  the `data:` lines joined by "\n"
 * @property {string} id    the last event ID in force when the event was dispatched ("" for none)
 */

/**
 * @typedef {object} ParserCallbacks
 * @property {(event: SSEEvent) => void} [onEvent]      a complete event (blank line seen, data not empty)
 * @property {(milliseconds: number) => void} [onRetry] a valid `retry:` field (ASCII digits only)
 * @property {(text: string) => void} [onComment]       a `:` line, e.g. a keep-alive; one leading space removed
 * @property {string} [lastEventId]  the ID a resumed stream starts from (what the client sent as Last-Event-ID)
 */

/**
 * @typedef {object} Parser
 * @property {(text: string) => void} feed            more decoded text of the stream, split anywhere
 * @property {(bytes: Uint8Array) => void} feedBytes  more raw bytes, decoded as UTF-8 (split anywhere)
 * @property {() => void} end  the stream ended: an unterminated event is discarded (as the spec says) and
 *   the parser is ready for the next connection; the last event ID is kept, for resuming
 * @property {() => string} lastEventId  the ID to resume from (updated when an event is dispatched)
 */

const BOM = "\uFEFF";

/**
 * @param {ParserCallbacks} [callbacks]  the callbacks, and the ID to start from
 * @returns {Parser}
 */
export function createParser(callbacks = {}) {
  const { onEvent, onRetry, onComment } = callbacks;
  let lastEventId = callbacks.lastEventId ?? "";

  // ignoreBOM keeps a leading BOM in the text so that feed() and feedBytes() strip it in one place.
  /** @type {TextDecoder} */
  let decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  let atStreamStart = true;
  // A CR may be the first half of a CRLF split across chunks: the LF that may follow is then not a
  // second (blank) line.
  let skipLeadingLF = false;
  // Pieces of the current, unterminated line; joined once when its terminator arrives (no O(n²) concat).
  /** @type {string[]} */
  let partialLine = [];

  let dataBuffer = "";
  let hasData = false;
  let eventTypeBuffer = "";
  let lastEventIdBuffer = lastEventId;

  /** @param {string} text */
  function feed(text) {
    if (atStreamStart && text.length > 0) {
      atStreamStart = false;
      // Spec: UTF-8 decode strips one leading BOM.
      if (text.startsWith(BOM)) text = text.slice(1);
    }
    let position = 0;
    if (skipLeadingLF && text.length > 0) {
      skipLeadingLF = false;
      if (text.charCodeAt(0) === 0x0a) position = 1;
    }
    const length = text.length;
    while (position < length) {
      const lf = text.indexOf("\n", position);
      const cr = text.indexOf("\r", position);
      let end;
      if (cr === -1) end = lf;
      else if (lf === -1) end = cr;
      else end = Math.min(cr, lf);
      if (end === -1) {
        partialLine.push(text.slice(position));
        return;
      }
      let line = text.slice(position, end);
      if (partialLine.length > 0) {
        partialLine.push(line);
        line = partialLine.join("");
        partialLine = [];
      }
      processLine(line);
      position = end + 1;
      if (text.charCodeAt(end) === 0x0d) {
        if (position < length) {
          if (text.charCodeAt(position) === 0x0a) position += 1;
        } else {
          skipLeadingLF = true;
        }
      }
    }
  }

  /** @param {string} line */
  function processLine(line) {
    // Spec: an empty line dispatches the event.
    if (line === "") {
      dispatch();
      return;
    }
    // Spec: a line starting with ":" is a comment; ignored by the stream, surfaced for keep-alive tracking.
    if (line.charCodeAt(0) === 0x3a) {
      if (onComment) onComment(stripOneSpace(line.slice(1)));
      return;
    }
    const colon = line.indexOf(":");
    if (colon === -1) {
      // Spec: no colon means the whole line is the field name and the value is empty.
      processField(line, "");
    } else {
      processField(line.slice(0, colon), stripOneSpace(line.slice(colon + 1)));
    }
  }

  /**
   * @param {string} name
   * @param {string} value
   */
  function processField(name, value) {
    switch (name) {
      case "event":
        eventTypeBuffer = value;
        break;
      case "data":
        // Spec: append the value then a LF; the final LF is removed at dispatch.
        dataBuffer = hasData ? `${dataBuffer}\n${value}` : value;
        hasData = true;
        break;
      case "id":
        // Spec: an id containing NUL is ignored (so it cannot truncate a header); an empty id resets.
        if (!value.includes("\0")) lastEventIdBuffer = value;
        break;
      case "retry":
        // Spec: only ASCII digits; anything else (sign, space, "1e3", empty) is ignored.
        if (/^[0-9]+$/.test(value) && onRetry) onRetry(Number.parseInt(value, 10));
        break;
      default:
      // Spec: unknown fields are ignored.
    }
  }

  function dispatch() {
    // Spec: the last event ID is set even when the event itself is not dispatched.
    lastEventId = lastEventIdBuffer;
    if (!hasData) {
      eventTypeBuffer = "";
      return;
    }
    const event = { type: eventTypeBuffer || "message", data: dataBuffer, id: lastEventId };
    dataBuffer = "";
    hasData = false;
    eventTypeBuffer = "";
    if (onEvent) onEvent(event);
  }

  /** @param {Uint8Array} bytes */
  function feedBytes(bytes) {
    feed(decoder.decode(bytes, { stream: true }));
  }

  function end() {
    // Flush a truncated UTF-8 sequence (becomes U+FFFD); it can only belong to the discarded tail.
    feed(decoder.decode());
    decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    atStreamStart = true;
    skipLeadingLF = false;
    partialLine = [];
    dataBuffer = "";
    hasData = false;
    eventTypeBuffer = "";
    // Kept across connections, as browsers do, so a resumed stream without ids keeps its place.
    lastEventIdBuffer = lastEventId;
  }

  return { feed, feedBytes, end, lastEventId: () => lastEventId };
}

/**
 * @param {string} value
 * @returns {string}
 */
function stripOneSpace(value) {
  return value.charCodeAt(0) === 0x20 ? value.slice(1) : value;
}

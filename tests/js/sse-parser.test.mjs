// The JS parser against hand-written WHATWG cases, fed whole, byte by byte and split at every point.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { createParser } from "../../clients/js/sse-parser.js";

/**
 * Parse `chunks` (strings or byte arrays) and return everything the parser reported, in order.
 * @param {(string | Uint8Array)[]} chunks
 * @param {{lastEventId?: string}} [options]
 */
function parse(chunks, options = {}) {
  /** @type {any[]} */
  const out = [];
  const parser = createParser({
    ...options,
    onEvent: (event) => out.push({ event }),
    onRetry: (ms) => out.push({ retry: ms }),
    onComment: (text) => out.push({ comment: text }),
  });
  for (const chunk of chunks) {
    if (typeof chunk === "string") parser.feed(chunk);
    else parser.feedBytes(chunk);
  }
  parser.end();
  return { out, lastEventId: parser.lastEventId() };
}

const utf8 = (/** @type {string} */ text) => new TextEncoder().encode(text);
const ev = (/** @type {string} */ data, type = "message", id = "") => ({ event: { type, data, id } });

/** @type {[string, string, any[]][]} */
const CASES = [
  ["one event", "data: hello\n\n", [ev("hello")]],
  ["data lines joined by LF", "data: a\ndata: b\ndata\n\n", [ev("a\nb\n")]],
  ["CRLF line ends", "data: a\r\ndata: b\r\n\r\n", [ev("a\nb")]],
  ["CR line ends", "data: a\rdata: b\r\r", [ev("a\nb")]],
  ["mixed line ends", "data: a\r\ndata: b\rdata: c\n\n", [ev("a\nb\nc")]],
  ["only one space is removed", "data:  two\n\n", [ev(" two")]],
  ["no space after the colon", "data:x\n\n", [ev("x")]],
  ["no colon: empty value", "data\n\n", [ev("")]],
  ["empty data buffer: no dispatch", "event: x\n\n", []],
  ["event type", "event: text\ndata: {}\n\n", [ev("{}", "text")]],
  ["empty event type is message", "event:\ndata: x\n\n", [ev("x")]],
  ["event type resets after dispatch", "event: a\ndata: 1\n\ndata: 2\n\n", [ev("1", "a"), ev("2")]],
  ["event type resets without dispatch", "event: a\n\ndata: 2\n\n", [ev("2")]],
  ["id persists", "id: 7\ndata: a\n\ndata: b\n\n", [ev("a", "message", "7"), ev("b", "message", "7")]],
  ["empty id resets", "id: 7\ndata: a\n\nid\ndata: b\n\n", [ev("a", "message", "7"), ev("b")]],
  ["id with NUL is ignored", "id: 1\ndata: a\n\nid: 2\u00003\ndata: b\n\n", [ev("a", "message", "1"), ev("b", "message", "1")]],
  ["comment", ": keep-alive\n\n", [{ comment: "keep-alive" }]],
  ["comment without space", ":x\n", [{ comment: "x" }]],
  ["retry digits", "retry: 1500\n", [{ retry: 1500 }]],
  ["retry not digits is ignored", "retry: 1.5\nretry: -1\nretry: +1\nretry: 1e3\nretry:\nretry: 1 \n", []],
  ["unknown field ignored", "foo: bar\ndata: x\n\n", [ev("x")]],
  ["field names are case sensitive", "Data: x\n\n", []],
  ["leading BOM stripped", "\uFEFFdata: x\n\n", [ev("x")]],
  ["only one BOM stripped", "\uFEFF\uFEFFdata: x\n\ndata: y\n\n", [ev("y")]],
  ["unterminated event discarded", "data: x\n\ndata: y\n", [ev("x")]],
  ["unterminated line discarded", "data: x", []],
  ["U+2028 is not a line break", "data: a\u2028b\n\n", [ev("a\u2028b")]],
  ["colon in value kept", "data: a: b\n\n", [ev("a: b")]],
];

describe("createParser", () => {
  for (const [name, input, expected] of CASES) {
    test(`parses: ${name}`, () => {
      assert.deepEqual(parse([input]).out, expected);
    });
    test(`same result at every split: ${name}`, () => {
      const bytes = utf8(input);
      for (let cut = 0; cut <= bytes.length; cut += 1) {
        assert.deepEqual(parse([bytes.slice(0, cut), bytes.slice(cut)]).out, expected, `cut at ${cut}`);
      }
      const oneByOne = [...bytes].map((b) => Uint8Array.of(b));
      assert.deepEqual(parse(oneByOne).out, expected);
      assert.deepEqual(parse([...input]).out, expected, "one UTF-16 unit at a time");
    });
  }

  test("CR at the end of a chunk and LF at the start of the next are one line end", () => {
    assert.deepEqual(parse(["data: a\r", "\ndata: b\r", "\n\r", "\n"]).out, [ev("a\nb")]);
  });

  test("CR at the end of a chunk then CR is a blank line", () => {
    assert.deepEqual(parse(["data: a\r", "\r"]).out, [ev("a")]);
  });

  test("invalid UTF-8 becomes U+FFFD", () => {
    const bytes = Uint8Array.of(...utf8("data: a"), 0xff, 0xc3, ...utf8("b\n\n"));
    assert.deepEqual(parse([bytes]).out, [ev("a\uFFFD\uFFFDb")]);
  });

  test("a multi-byte character split across chunks decodes whole", () => {
    const bytes = utf8("data: é€😀\n\n");
    for (let cut = 6; cut < bytes.length - 2; cut += 1) {
      assert.deepEqual(parse([bytes.slice(0, cut), bytes.slice(cut)]).out, [ev("é€😀")]);
    }
  });

  test("a BOM split across byte chunks is stripped", () => {
    const bytes = utf8("\uFEFFdata: x\n\n");
    assert.deepEqual(parse([bytes.slice(0, 1), bytes.slice(1, 2), bytes.slice(2)]).out, [ev("x")]);
  });

  test("lastEventId follows dispatch, including an id-only block", () => {
    assert.equal(parse(["id: 3\ndata: a\n\nid: 4\n\n"]).lastEventId, "4");
  });

  test("an id without a blank line does not become the resume point", () => {
    assert.equal(parse(["id: 3\ndata: a\n\nid: 4\n"]).lastEventId, "3");
  });

  test("a resumed stream starts from the given last event id", () => {
    const { out } = parse(["data: a\n\n"], { lastEventId: "41" });
    assert.deepEqual(out, [ev("a", "message", "41")]);
  });

  test("end() discards the partial event and keeps the id for the next connection", () => {
    /** @type {any[]} */
    const events = [];
    const parser = createParser({ onEvent: (e) => events.push(e) });
    parser.feed("id: 5\ndata: a\n\ndata: lost");
    parser.end();
    parser.feed("\uFEFFdata: b\n\n");
    assert.deepEqual(events, [
      { type: "message", data: "a", id: "5" },
      { type: "message", data: "b", id: "5" },
    ]);
  });

  test("a long line split into many chunks is joined once", () => {
    const payload = "x".repeat(200_000);
    const chunks = ["data: "];
    for (let i = 0; i < payload.length; i += 7) chunks.push(payload.slice(i, i + 7));
    chunks.push("\n\n");
    const { out } = parse(chunks);
    assert.equal(out.length, 1);
    assert.equal(out[0].event.data, payload);
  });
});

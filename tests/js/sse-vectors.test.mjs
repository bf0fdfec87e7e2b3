// The JS parser against the vectors the Python codec is tested with: both parsers must agree.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { createParser } from "../../clients/js/sse-parser.js";

/**
 * @typedef {{type: string, data: string, last_event_id: string}} VectorEvent
 * @typedef {{name: string, encoding: "utf-8" | "base64", chunks: string[], events: VectorEvent[],
 *   retry: number | null, final_last_event_id: string}} Vector
 */

/** @type {{about: string, vectors: Vector[]}} */
const file = JSON.parse(readFileSync(new URL("../vectors/sse_parse_vectors.json", import.meta.url), "utf8"));

/** @param {Vector} vector */
function chunkBytes(vector) {
  return vector.chunks.map((chunk) =>
    vector.encoding === "base64" ? new Uint8Array(Buffer.from(chunk, "base64")) : new TextEncoder().encode(chunk),
  );
}

/** @param {Uint8Array[]} chunks */
function run(chunks) {
  /** @type {VectorEvent[]} */
  const events = [];
  /** @type {number | null} */
  let retry = null;
  const parser = createParser({
    onEvent: (e) => events.push({ type: e.type, data: e.data, last_event_id: e.id }),
    onRetry: (ms) => {
      retry = ms;
    },
  });
  for (const chunk of chunks) parser.feedBytes(chunk);
  parser.end();
  return { events, retry, final_last_event_id: parser.lastEventId() };
}

/** @param {Vector} vector */
const expected = (vector) => ({
  events: vector.events,
  retry: vector.retry,
  final_last_event_id: vector.final_last_event_id,
});

describe("shared SSE vectors", () => {
  test("the vector file is not empty", () => {
    assert.ok(file.vectors.length >= 20);
  });

  for (const vector of file.vectors) {
    test(vector.name, () => {
      const chunks = chunkBytes(vector);
      assert.deepEqual(run(chunks), expected(vector), "chunks as given");
      // The split points must not matter: all bytes at once, and cut in two at every byte.
      const total = Buffer.concat(chunks);
      assert.deepEqual(run([total]), expected(vector), "one chunk");
      for (let cut = 1; cut < total.length; cut += 1) {
        assert.deepEqual(run([total.subarray(0, cut), total.subarray(cut)]), expected(vector), `cut at ${cut}`);
      }
      if (vector.encoding === "utf-8") {
        /** @type {VectorEvent[]} */
        const events = [];
        const parser = createParser({
          onEvent: (e) => events.push({ type: e.type, data: e.data, last_event_id: e.id }),
        });
        for (const chunk of vector.chunks) parser.feed(chunk);
        parser.end();
        assert.deepEqual(events, vector.events, "fed as decoded text");
      }
    });
  }
});

// The fetch-based client against a real HTTP server on 127.0.0.1 (node:http), scripted per test.
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import { afterEach, describe, test } from "node:test";

import {
  backoffDelay,
  createGatewayClient,
  explainStreamError,
  GatewayError,
  openEventStream,
  StreamGaveUpError,
  StreamHTTPError,
} from "../../clients/js/ssegate.js";

/**
 * @typedef {{method: string, url: string, headers: http.IncomingHttpHeaders, body: string}} Seen
 * @typedef {(req: Seen, res: http.ServerResponse, index: number) => void | Promise<void>} Handler
 */

/** @type {http.Server[]} */
const servers = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    server.close();
    await once(server, "close");
  }
});

/**
 * Serve `handler` on a kernel-chosen port; `seen` records every request.
 * @param {Handler} handler
 */
async function serve(handler) {
  /** @type {Seen[]} */
  const seen = [];
  const server = http.createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    const request = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body };
    seen.push(request);
    await handler(request, res, seen.length - 1);
  });
  servers.push(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = /** @type {import("node:net").AddressInfo} */ (server.address());
  return { base: `http://127.0.0.1:${address.port}`, seen };
}

/** @param {http.ServerResponse} res */
function startStream(res, extra = {}) {
  res.writeHead(200, { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store", ...extra });
  res.write(": open\nretry: 10\n\n");
}

/** @param {number} id */
const frame = (id, type = "message", data = `e${id}`) => `id: ${id}\nevent: ${type}\ndata: ${data}\n\n`;
const delay = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {AsyncIterable<any>} stream */
async function collect(stream) {
  const events = [];
  for await (const event of stream) events.push(event);
  return events;
}

const isEnd = (/** @type {{type: string}} */ e) => e.type === "end";

describe("openEventStream", () => {
  test("resumes after a dropped connection with Last-Event-ID, each event exactly once", async () => {
    const { base, seen } = await serve((req, res, index) => {
      startStream(res);
      if (index === 0) {
        // A torn event, then the connection dies.
        res.write(frame(1) + frame(2) + "id: 3\nda", () => res.destroy());
        return;
      }
      const after = Number(req.headers["last-event-id"]);
      for (let id = after + 1; id <= 4; id += 1) res.write(frame(id));
      res.end(frame(5, "end"));
    });
    const stream = openEventStream(`${base}/s`, { isTerminal: isEnd, random: () => 0 });
    const events = await collect(stream);
    assert.deepEqual(
      events.map((e) => e.data),
      ["e1", "e2", "e3", "e4", "e5"],
    );
    assert.equal(seen.length, 2);
    assert.equal(seen[1].headers["last-event-id"], "2");
    assert.deepEqual(await stream.done, { reason: "terminal", lastEventId: "5" });
  });

  test("callbacks alone receive every event, and done says how the stream ended", async () => {
    const { base } = await serve((_req, res) => {
      startStream(res);
      res.end(frame(1) + frame(2, "end"));
    });
    /** @type {string[]} */
    const ids = [];
    const stream = openEventStream(`${base}/s`, { isTerminal: isEnd, onEvent: (e) => ids.push(e.id) });
    assert.deepEqual(await stream.done, { reason: "terminal", lastEventId: "2" });
    assert.deepEqual(ids, ["1", "2"]);
  });

  test("a resume point given up front is sent on the first request", async () => {
    const { base, seen } = await serve((_req, res) => {
      startStream(res);
      res.end(frame(9, "end"));
    });
    await collect(openEventStream(`${base}/s`, { lastEventId: "8", isTerminal: isEnd }));
    assert.equal(seen[0].headers["last-event-id"], "8");
  });

  test("stops on 204 without reconnecting", async () => {
    const { base, seen } = await serve((_req, res) => {
      res.writeHead(204);
      res.end();
    });
    const stream = openEventStream(`${base}/s`);
    assert.deepEqual(await collect(stream), []);
    assert.equal((await stream.done).reason, "no-content");
    assert.equal(seen.length, 1);
  });

  test("a terminal event ends the stream even though the connection stays open", async () => {
    const { base, seen } = await serve((_req, res) => {
      startStream(res);
      res.write(frame(1) + frame(2, "end") + frame(3));
    });
    const events = await collect(openEventStream(`${base}/s`, { isTerminal: isEnd }));
    assert.deepEqual(
      events.map((e) => e.id),
      ["1", "2"],
    );
    assert.equal(seen.length, 1);
  });

  test("reconnects when a connection goes silent past the idle timeout", async () => {
    const { base, seen } = await serve((_req, res, index) => {
      startStream(res);
      if (index === 0) res.write(frame(1)); // then silence, connection left open
      else res.end(frame(2, "end"));
    });
    /** @type {unknown[]} */
    const reasons = [];
    const stream = openEventStream(`${base}/s`, {
      idleTimeoutMs: 150,
      isTerminal: isEnd,
      onReconnect: ({ error }) => reasons.push(error),
    });
    const events = await collect(stream);
    assert.deepEqual(
      events.map((e) => e.id),
      ["1", "2"],
    );
    assert.equal(seen.length, 2);
    assert.equal(/** @type {Error} */ (reasons[0]).name, "IdleTimeoutError");
  });

  test("keep-alive comments keep a quiet connection alive", async () => {
    const { base, seen } = await serve(async (_req, res) => {
      startStream(res);
      for (let i = 0; i < 8; i += 1) {
        await delay(40);
        res.write(": keep-alive\n\n");
      }
      res.end(frame(1, "end"));
    });
    let comments = 0;
    const stream = openEventStream(`${base}/s`, {
      idleTimeoutMs: 150,
      isTerminal: isEnd,
      onComment: () => {
        comments += 1;
      },
    });
    await collect(stream);
    assert.equal(seen.length, 1, "no reconnect: 320 ms of keep-alives beat a 150 ms idle timeout");
    assert.equal(comments, 9);
  });

  test("an AbortSignal stops reading", async () => {
    const { base } = await serve((_req, res) => {
      startStream(res);
      res.write(frame(1));
    });
    const controller = new AbortController();
    const stream = openEventStream(`${base}/s`, { signal: controller.signal });
    const seenIds = [];
    for await (const event of stream) {
      seenIds.push(event.id);
      controller.abort();
    }
    assert.deepEqual(seenIds, ["1"]);
    assert.equal((await stream.done).reason, "aborted");
  });

  test("a POST is read back with GET from its Location on reconnect, never sent twice", async () => {
    const { base, seen } = await serve((req, res) => {
      if (req.method === "POST") {
        startStream(res, { Location: "/things/42/events" });
        res.write(frame(1), () => res.destroy());
        return;
      }
      startStream(res);
      res.end(frame(2, "end"));
    });
    const stream = openEventStream(`${base}/things`, {
      method: "POST",
      body: '{"x":1}',
      headers: { Authorization: "Bearer t", "Content-Type": "application/json" },
      isTerminal: isEnd,
    });
    const events = await collect(stream);
    assert.deepEqual(
      events.map((e) => e.id),
      ["1", "2"],
    );
    assert.deepEqual(
      seen.map((s) => `${s.method} ${s.url}`),
      ["POST /things", "GET /things/42/events"],
    );
    assert.equal(seen[0].body, '{"x":1}');
    assert.equal(seen[1].headers.authorization, "Bearer t");
    assert.equal(seen[1].headers["last-event-id"], "1");
  });

  test("a client error is not retried and reaches the caller with its body", async () => {
    const { base, seen } = await serve((_req, res) => {
      res.writeHead(404, { "Content-Type": "application/json" });
      res.end('{"error": {"code": "not_found", "message": "no such generation"}}');
    });
    const stream = openEventStream(`${base}/s`);
    await assert.rejects(collect(stream), (error) => {
      assert.ok(error instanceof StreamHTTPError);
      assert.equal(error.status, 404);
      assert.deepEqual(error.body, { error: { code: "not_found", message: "no such generation" } });
      return true;
    });
    assert.equal(seen.length, 1);
  });

  test("a 503 is retried", async () => {
    const { base, seen } = await serve((_req, res, index) => {
      if (index === 0) {
        res.writeHead(503);
        res.end();
        return;
      }
      startStream(res);
      res.end(frame(1, "end"));
    });
    const events = await collect(openEventStream(`${base}/s`, { retryMs: 10, isTerminal: isEnd }));
    assert.equal(events.length, 1);
    assert.equal(seen.length, 2);
  });

  test("gives up after maxAttempts failures in a row", async () => {
    const { base, seen } = await serve((_req, res) => {
      res.writeHead(503);
      res.end();
    });
    const stream = openEventStream(`${base}/s`, { retryMs: 5, maxAttempts: 3 });
    await assert.rejects(stream.done, StreamGaveUpError);
    assert.equal(seen.length, 3);
  });

  test("a refusal of the request that starts something is not sent again", async () => {
    const { base, seen } = await serve((_req, res) => {
      res.writeHead(429, { "Content-Type": "application/json", "Retry-After": "42" });
      res.end('{"error": {"code": "rate_limited", "message": "slow down", "retry_after": 42}}');
    });
    const stream = openEventStream(`${base}/things`, { method: "POST", body: "{}", retryMs: 5, maxAttempts: 4 });
    await assert.rejects(stream.done, (error) => {
      assert.ok(error instanceof StreamHTTPError);
      assert.equal(error.status, 429);
      assert.equal(error.retryAfterMs, 42000);
      return true;
    });
    assert.equal(seen.length, 1, "a 429 with a long Retry-After is final for a POST");
  });

  test("a POST answered 503 (nothing started) is sent again", async () => {
    const { base, seen } = await serve((_req, res, index) => {
      if (index === 0) {
        res.writeHead(503, { "Content-Type": "application/json", "Retry-After": "0" });
        res.end('{"error": {"code": "draining", "message": "this server is shutting down; retry"}}');
        return;
      }
      startStream(res);
      res.end(frame(1, "end"));
    });
    const stream = openEventStream(`${base}/things`, { method: "POST", body: "{}", retryMs: 5, isTerminal: isEnd });
    const events = await collect(stream);
    assert.equal(events.length, 1);
    assert.deepEqual(
      seen.map((r) => r.method),
      ["POST", "POST"],
    );
  });

  for (const status of [500, 502, 504]) {
    test(`a POST answered ${status} is final: it may have started something`, async () => {
      const { base, seen } = await serve((_req, res) => {
        res.writeHead(status);
        res.end();
      });
      const stream = openEventStream(`${base}/things`, { method: "POST", body: "{}", retryMs: 5, maxAttempts: 4 });
      await assert.rejects(stream.done, (error) => error instanceof StreamHTTPError && error.status === status);
      assert.equal(seen.length, 1, "sent once: a second POST could start a second generation");
    });
  }

  test("a POST refused with 4xx other than 429 is final at once", async () => {
    const { base, seen } = await serve((_req, res) => {
      res.writeHead(408);
      res.end();
    });
    const stream = openEventStream(`${base}/things`, { method: "POST", body: "{}", retryMs: 5, maxAttempts: 4 });
    await assert.rejects(stream.done, (error) => error instanceof StreamHTTPError && error.status === 408);
    assert.equal(seen.length, 1);
  });

  test("a POST refused with 429 and a short Retry-After is sent once more, after that wait", async () => {
    const { base, seen } = await serve((_req, res) => {
      res.writeHead(429, { "Content-Type": "application/json", "Retry-After": "1" });
      res.end('{"error": {"code": "too_many_streams", "message": "close one", "retry_after": 1}}');
    });
    /** @type {number[]} */
    const at = [];
    const stream = openEventStream(`${base}/things`, {
      method: "POST",
      body: "{}",
      retryMs: 5,
      maxAttempts: 10,
      onReconnect: () => at.push(performance.now()),
    });
    const started = performance.now();
    await assert.rejects(stream.done, (error) => error instanceof StreamHTTPError && error.status === 429);
    assert.equal(seen.length, 2, "one more try, not a loop");
    assert.ok(performance.now() - started >= 990, "the second try waited for Retry-After");
    assert.equal(at.length, 1);
  });

  test("a retried read waits at least as long as Retry-After asks", async () => {
    const { base, seen } = await serve((_req, res, index) => {
      if (index === 0) {
        res.writeHead(503, { "Retry-After": "1" });
        res.end();
        return;
      }
      startStream(res);
      res.end(frame(1, "end"));
    });
    /** @type {number[]} */
    const delays = [];
    const started = performance.now();
    const events = await collect(
      openEventStream(`${base}/s`, {
        retryMs: 10,
        isTerminal: isEnd,
        onReconnect: ({ delayMs }) => delays.push(delayMs),
      }),
    );
    assert.equal(events.length, 1);
    assert.equal(seen.length, 2);
    assert.deepEqual(delays, [1000]);
    assert.ok(performance.now() - started >= 990);
  });

  test("giving up keeps the server's last answer, and explainStreamError reads it", async () => {
    const { base } = await serve((_req, res) => {
      res.writeHead(503, { "Content-Type": "application/json", "Retry-After": "0" });
      res.end('{"error": {"code": "draining", "message": "shutting down"}}');
    });
    const stream = openEventStream(`${base}/s`, { retryMs: 5, maxAttempts: 2 });
    const failure = await stream.done.then(
      () => assert.fail("should give up"),
      (error) => error,
    );
    assert.ok(failure instanceof StreamGaveUpError);
    const explained = explainStreamError(failure);
    assert.ok(explained instanceof GatewayError);
    assert.equal(explained.code, "draining");
    assert.equal(explained.status, 503);
  });

  test("a response that is not an event stream is an error", async () => {
    const { base } = await serve((_req, res) => {
      res.writeHead(200, { "Content-Type": "text/html" });
      res.end("<html>");
    });
    await assert.rejects(openEventStream(`${base}/s`).done, /expected text\/event-stream/);
  });

  test("reports connection states in order", async () => {
    const { base } = await serve((_req, res, index) => {
      if (index === 0) {
        res.writeHead(200, { "Content-Type": "text/event-stream" });
        res.write(": open\nretry: 10\n\n", () => res.destroy());
        return;
      }
      startStream(res);
      res.end(frame(1, "end"));
    });
    /** @type {string[]} */
    const states = [];
    const stream = openEventStream(`${base}/s`, { isTerminal: isEnd, onStateChange: (s) => states.push(s) });
    await stream.done;
    assert.deepEqual(states, ["open", "reconnecting", "open", "closed"]);
  });
});

describe("backoffDelay", () => {
  test("grows from the server's retry, is capped, and jitters downwards only", () => {
    assert.equal(backoffDelay(1000, 0, 30000, () => 0.999999), 1000);
    assert.equal(backoffDelay(1000, 0, 30000, () => 0), 500);
    assert.equal(backoffDelay(1000, 3, 30000, () => 0.999999), 8000);
    assert.equal(backoffDelay(1000, 50, 30000, () => 0.999999), 30000);
  });
});

describe("createGatewayClient", () => {
  /** A small stand-in for the gateway's HTTP surface, for the client's request shapes. */
  async function gateway() {
    return serve((req, res) => {
      const json = (/** @type {number} */ status, /** @type {unknown} */ body) => {
        res.writeHead(status, { "Content-Type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.method === "POST" && req.url === "/v1/generations") {
        if (req.headers.accept === "text/event-stream") {
          startStream(res, { Location: "/v1/generations/g1/events", "X-Generation-Id": "g1" });
          res.write(`id: 1\nevent: start\ndata: {"id":"g1","model":"demo","provider":"demo"}\n\n`);
          res.write(`id: 2\nevent: text\ndata: {"delta":"Hi"}\n\n`);
          res.end(`id: 3\nevent: done\ndata: {"finish_reason":"stop","usage":null}\n\n`);
          return;
        }
        json(201, { id: "g1", events_url: "/v1/generations/g1/events", cancel_url: "/v1/generations/g1/cancel" });
      } else if (req.url === "/v1/generations/g1/events") {
        startStream(res);
        res.end(`id: 3\nevent: error\ndata: {"code":"rate_limited","message":"slow down","retryable":true}\n\n`);
      } else if (req.url === "/v1/generations/g1/cancel") {
        json(202, { id: "g1", state: "cancelled" });
      } else if (req.url === "/v1/generations/g1") {
        json(200, { id: "g1", state: "done" });
      } else {
        json(404, { error: { code: "not_found", message: "no such generation" } });
      }
    });
  }

  test("generate() streams in the creating request and learns the generation id", async () => {
    const { base, seen } = await gateway();
    const client = createGatewayClient({ baseUrl: base, headers: { Authorization: "Bearer k" } });
    /** @type {string[]} */
    const ids = [];
    const generation = client.generate(
      { messages: [{ role: "user", content: "hello" }] },
      { onGenerationId: (id) => ids.push(id) },
    );
    const events = await collect(generation);
    assert.deepEqual(
      events.map((e) => e.type),
      ["start", "text", "done"],
    );
    assert.deepEqual(events[1].data, { delta: "Hi" });
    assert.deepEqual(ids, ["g1"]);
    assert.equal(generation.generationId, "g1");
    assert.equal((await generation.done)?.type, "done");
    assert.deepEqual(JSON.parse(seen[0].body), { messages: [{ role: "user", content: "hello" }] });
    assert.equal(seen[0].headers.authorization, "Bearer k");
  });

  test("startGeneration, follow, cancel and state speak the documented routes", async () => {
    const { base, seen } = await gateway();
    const client = createGatewayClient({ baseUrl: base });
    const created = await client.startGeneration({ messages: [{ role: "user", content: "x" }] });
    assert.equal(created.id, "g1");
    const followed = client.follow(created.id, { lastEventId: "2" });
    const events = await collect(followed);
    assert.deepEqual(events[0].data, { code: "rate_limited", message: "slow down", retryable: true });
    assert.equal((await followed.done)?.type, "error");
    assert.equal(seen[1].headers["last-event-id"], "2");
    assert.deepEqual(await client.cancel("g1"), { id: "g1", state: "cancelled" });
    assert.equal((await client.state("g1")).state, "done");
    assert.equal(seen[2].method, "POST");
  });

  test("an error answer becomes a GatewayError with its code", async () => {
    const { base } = await gateway();
    const client = createGatewayClient({ baseUrl: base });
    await assert.rejects(client.state("nope"), (error) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.code, "not_found");
      assert.equal(error.status, 404);
      assert.equal(error.message, "no such generation");
      return true;
    });
  });

  test("generate() refused by the gateway fails at once with the gateway's code and wait", async () => {
    const { base, seen } = await serve((_req, res) => {
      res.writeHead(429, { "Content-Type": "application/json", "Retry-After": "37" });
      res.end('{"error": {"code": "rate_limited", "message": "more than 1 started", "retry_after": 37}}');
    });
    const generation = createGatewayClient({ baseUrl: base }).generate(
      { messages: [{ role: "user", content: "x" }] },
      { maxAttempts: 8 },
    );
    const failure = await generation.done.then(
      () => assert.fail("should fail"),
      (error) => error,
    );
    const explained = explainStreamError(failure);
    assert.ok(explained instanceof GatewayError);
    assert.equal(explained.code, "rate_limited");
    assert.equal(explained.retryAfterMs, 37000);
    assert.equal(seen.length, 1);
  });

  test("startGeneration returns the stream token the server hands out with auth on", async () => {
    const { base, seen } = await serve((_req, res) => {
      res.writeHead(201, { "Content-Type": "application/json", Location: "/v1/generations/g1" });
      res.end(JSON.stringify({ id: "g1", events_url: "/v1/generations/g1/events", stream_token: "a.b.c" }));
    });
    const client = createGatewayClient({ baseUrl: base, headers: { Authorization: "Bearer key" } });
    const created = await client.startGeneration({ messages: [{ role: "user", content: "x" }] });
    assert.equal(created.stream_token, "a.b.c");
    assert.equal(seen[0].headers.authorization, "Bearer key");
  });

  test("providers() is optional: a 404 means none listed", async () => {
    const { base } = await gateway();
    assert.deepEqual(await createGatewayClient({ baseUrl: base }).providers(), []);
  });
});

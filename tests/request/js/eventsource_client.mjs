// The npm `eventsource` package as an app uses it to POST a question: a custom fetch makes each
// (re)connection a POST with the app's body (and, optionally, an Idempotency-Key). On every
// reconnect the package adds Last-Event-ID itself. Prints what it saw as one JSON line.
//   node eventsource_client.mjs <base url> <body json> [idempotency key]
import { EventSource } from "eventsource";

const [base, body, key] = process.argv.slice(2);
const TYPES = ["start", "status", "text", "thinking", "tool_call", "usage", "reset", "done", "error"];
const seen = { opens: 0, statuses: [], generationIds: [], lastEventIds: [], events: [] };

const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ...seen, timedOut: true }));
  process.exit(2);
}, 30_000);

const source = new EventSource(`${base}/v1/generations`, {
  fetch: async (input, init) => {
    const headers = new Headers(init.headers);
    headers.set("content-type", "application/json");
    if (key) headers.set("idempotency-key", key);
    seen.opens += 1;
    seen.lastEventIds.push(headers.get("last-event-id"));
    const response = await fetch(input, { ...init, method: "POST", body, headers });
    seen.statuses.push(response.status);
    seen.generationIds.push(response.headers.get("x-generation-id"));
    return response;
  },
});
for (const type of TYPES) {
  source.addEventListener(type, (event) => {
    // EventSource fires its own "error" (a connection error, no data) before each reconnect:
    // only a server's error event has data.
    if (type === "error" && event.data === undefined) return;
    seen.events.push({ id: event.lastEventId, event: type, data: event.data });
    if (type === "done" || type === "error") {
      source.close();
      clearTimeout(deadline);
      console.log(JSON.stringify(seen));
    }
  });
}

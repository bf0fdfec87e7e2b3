// Drives ssegate's AI SDK door with the npm `ai` package, as a useChat app's transport does.
// Usage: node ui_client.mjs <command> <json options>; prints one JSON result line.
//   send    {base, chatId, prompt}                      -> {message, chunks}
//   resume  {base, chatId, prompt, cutAfter}            -> {before, message, chunks}
//   stop    {base, chatId, prompt, stopAfter}           -> {message, chunks, stopped}
//   empty   {base, chatId}                              -> {resumed: null | "stream"}
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [command, raw] = process.argv.slice(2);
const options = JSON.parse(raw);
const transport = new DefaultChatTransport({
  api: `${options.base}/v1/ui/chat`,
  headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : undefined,
});

function userMessage(text) {
  return { id: `u-${Date.now()}`, role: "user", parts: [{ type: "text", text }] };
}

function send(signal) {
  return transport.sendMessages({
    chatId: options.chatId,
    messages: [userMessage(options.prompt)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: signal,
  });
}

// Tee a chunk stream: the chunk types seen (in order) and the stream for readUIMessageStream.
function recording(stream, types) {
  return stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        types.push(chunk.type);
        controller.enqueue(chunk);
      },
    }),
  );
}

async function lastMessage(stream) {
  let last = null;
  for await (const message of readUIMessageStream({ stream, terminateOnError: true })) {
    last = message;
  }
  return last;
}

function textOf(message) {
  return message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
}

async function main() {
  if (command === "send") {
    const types = [];
    const message = await lastMessage(recording(await send(undefined), types));
    return { message, chunks: types };
  }
  if (command === "resume") {
    // Read part of the answer, then drop the connection as a closed tab does...
    const controller = new AbortController();
    const reader = (await send(controller.signal)).getReader();
    const before = [];
    while (before.length < options.cutAfter) {
      const { value, done } = await reader.read();
      if (done) break;
      before.push(value);
    }
    controller.abort();
    await reader.cancel().catch(() => {});
    const beforeText = before.filter((c) => c.type === "text-delta").map((c) => c.delta).join("");
    // ... and come back: reconnectToStream is what useChat({resume: true}) calls on mount.
    const resumed = await transport.reconnectToStream({ chatId: options.chatId });
    if (resumed === null) return { before: beforeText, message: null, chunks: [] };
    const types = [];
    const message = await lastMessage(recording(resumed, types));
    return { before: beforeText, message, chunks: types };
  }
  if (command === "stop") {
    const reader = (await send(undefined)).getReader();
    const seen = [];
    while (seen.length < options.stopAfter) {
      const { value, done } = await reader.read();
      if (done) break;
      seen.push(value);
    }
    const response = await fetch(`${options.base}/v1/ui/chat/${encodeURIComponent(options.chatId)}/stop`, {
      method: "POST",
    });
    const stopped = { status: response.status, body: response.status === 200 ? await response.json() : null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      seen.push(value);
    }
    const text = seen.filter((c) => c.type === "text-delta").map((c) => c.delta).join("");
    return { text, chunks: seen.map((c) => c.type), stopped };
  }
  if (command === "empty") {
    const resumed = await transport.reconnectToStream({ chatId: options.chatId });
    return { resumed: resumed === null ? null : "stream" };
  }
  throw new Error(`unknown command ${command}`);
}

main().then(
  (result) => {
    process.stdout.write(JSON.stringify(result) + "\n");
  },
  (error) => {
    process.stdout.write(JSON.stringify({ error: String(error && error.stack ? error.stack : error) }) + "\n");
    process.exitCode = 1;
  },
);

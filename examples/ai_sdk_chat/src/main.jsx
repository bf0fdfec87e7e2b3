// useChat from @ai-sdk/react against ssegate's AI SDK door (docs/dialects.md).
// ?server=<ssegate URL> (default: this page's origin); the chat id lives in the URL's hash so a
// reload finds the same chat, and resume: true picks its running answer up where it is.
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useState } from "react";
import { createRoot } from "react-dom/client";

const params = new URLSearchParams(location.search);
const server = (params.get("server") || location.origin).replace(/\/$/, "");
if (!location.hash) location.hash = `chat-${crypto.randomUUID()}`;
const chatId = location.hash.slice(1);
// ssegate does not store chats: keep the user's messages here so a reload can show them.
const saved = JSON.parse(sessionStorage.getItem(chatId) || "[]");

function Part({ part }) {
  if (part.type === "text") return <span data-part="text">{part.text}</span>;
  if (part.type === "reasoning") return <em data-part="reasoning">{part.text}</em>;
  if (part.type.startsWith("tool-")) {
    return <div className="tool" data-part="tool">{part.type.slice(5)}({JSON.stringify(part.input)})</div>;
  }
  return null;
}

function Chat() {
  const [input, setInput] = useState("");
  const { messages, sendMessage, stop, status, error } = useChat({
    id: chatId,
    messages: saved,
    resume: true,
    transport: new DefaultChatTransport({ api: `${server}/v1/ui/chat` }),
  });
  const send = (event) => {
    event.preventDefault();
    if (!input.trim()) return;
    const message = { role: "user", parts: [{ type: "text", text: input }] };
    sessionStorage.setItem(chatId, JSON.stringify([...messages, { id: `u-${Date.now()}`, ...message }]));
    sendMessage({ text: input });
    setInput("");
  };
  // Stop for every tab and for the upstream (not only this tab's fetch), then locally.
  const stopAll = async () => {
    await fetch(`${server}/v1/ui/chat/${encodeURIComponent(chatId)}/stop`, { method: "POST" });
    stop();
  };
  return (
    <main>
      <div id="messages">
        {messages.map((m) => (
          <div key={m.id} className={`message ${m.role}`} data-role={m.role}>
            {m.parts.map((part, i) => <Part key={i} part={part} />)}
          </div>
        ))}
      </div>
      <p id="status" data-status={status}>{status}{error ? `: ${error.message}` : ""}</p>
      <form onSubmit={send}>
        <input id="prompt" value={input} onChange={(e) => setInput(e.target.value)} placeholder="Ask something" />
        <button id="send" type="submit" disabled={status === "streaming" || status === "submitted"}>Send</button>
        <button id="stop" type="button" onClick={stopAll} disabled={status !== "streaming" && status !== "submitted"}>
          Stop
        </button>
      </form>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<Chat />);

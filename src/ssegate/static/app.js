// @ts-check
/**
 * The chat page: sends the conversation, streams the answer token by token, survives reloads and network
 * drops, lets another tab watch the same answer, and stops the model on request.
 *
 * Reload rule (exact, no lost or repeated text): the page keeps the conversation and the running
 * generation's id in sessionStorage (and the id in the URL hash), and after a reload re-follows that
 * generation from its first event, rebuilding the answer. Within one page life, a dropped connection
 * resumes after the last event id, so text already shown is never sent again.
 *
 * API keys: with a key entered (kept in this tab's sessionStorage), every request carries it as
 * `Authorization: Bearer`, and the answer is started with a JSON POST, whose reply holds a stream
 * token for that one answer: the watch link carries the token (in its #fragment), not the key.
 */

import { createGatewayClient, explainStreamError, GatewayError, StreamGaveUpError } from "./ssegate.js";
import { renderMarkdown } from "./markdown.js";
import { isPageTool, PAGE_TOOLS, runPageTool } from "./tools.js";

/** @typedef {import("./ssegate.js").GenerationEvent} GenerationEvent */
/** @typedef {import("./ssegate.js").GenerationStream} GenerationStream */

/**
 * What a person sees for an answer.
 * @typedef {"connecting" | "streaming" | "reconnecting" | "done" | "error" | "cancelled"} TurnState
 */

/**
 * @typedef {object} ToolCall
 * @property {string} id
 * @property {string} name
 * @property {string} input   the JSON arguments as streamed so far
 * @property {boolean} complete
 * @property {any} [args]      the whole call's parsed input (its `end` event)
 * @property {string} [result] what the page's tool returned (built-in tools only)
 * @property {boolean} [isError]
 */

/**
 * @typedef {object} UserTurn
 * @property {"user"} role
 * @property {string} content
 */

/**
 * @typedef {object} AssistantTurn
 * @property {"assistant"} role
 * @property {string | null} generationId
 * @property {string} [streamToken]  lets a tab without the key watch this answer (auth on)
 * @property {TurnState} state
 * @property {string} text       the raw text exactly as the server sent it
 * @property {string} thinking
 * @property {string} [thinkingSignature]  what signed the thinking (sent back with tool results)
 * @property {string[]} [redactedThinking]
 * @property {ToolCall[]} tools
 * @property {string} model
 * @property {{title: string, detail: string} | null} error
 * @property {string} finishReason
 * @property {string} stopReason  "cancelled" or "abandoned" when the answer was stopped
 * @property {number} deltas      text and thinking deltas received (a token count until usage arrives)
 * @property {number | null} outputTokens
 * @property {number | null} sentAt       when this tab asked (for time to first token)
 * @property {number | null} firstTokenAt when the first token arrived, if this tab saw it arrive live
 * @property {number | null} endedAt
 * @property {number} received        events received, in stream order (kept across a reload: the
 *   events a reloaded page gets again up to this count are replays)
 * @property {number} replayedTokens  deltas that came from the server's log, not live (a reload, a
 *   late join): shown as such, never counted in tokens per second
 *
 * Times are wall-clock ms (Date.now()), so that they stay comparable across a reload.
 */

/** @typedef {UserTurn | AssistantTurn} Turn */

const STORAGE_KEY = "ssegate.chat.v1";
const API_KEY_STORAGE = "ssegate.apiKey";
const TERMINAL = new Set(["done", "error", "cancelled"]);

/** Error codes of `error` events (the model provider's side, mostly), in words a person can act on. */
const ERROR_TITLES = /** @type {Record<string, string>} */ ({
  upstream_auth: "The model provider rejected the API key. Check the key the server is configured with.",
  upstream_bad_request: "The model provider refused this request as invalid.",
  rate_limited: "The model provider is rate-limiting requests. Wait a moment, then try again.",
  upstream_overloaded: "The model is overloaded right now. Try again in a moment.",
  upstream_unavailable: "The model provider cannot be reached right now.",
  upstream_timeout: "The model provider took too long to answer.",
  upstream_disconnected: "The connection to the model provider broke off in the middle of the answer.",
  upstream_error: "The model provider reported an error.",
  upstream_lost: "The server writing this answer went away before it finished.",
  internal: "Something went wrong inside ssegate.",
  not_found: "This answer is no longer available: it expired, or the link is wrong.",
  network: "The server cannot be reached. Check your connection, then try again.",
  token_expired: "The access of this watch link has expired. Open a fresh link from the author's tab.",
});

/**
 * Codes of ssegate's own refusals (an HTTP answer, not an event): why the server said no, and what to
 * do about it. Some wording depends on the error (how long to wait) or the tab (watching or not).
 * @type {Record<string, (error: GatewayError) => string>}
 */
const REFUSAL_TITLES = {
  rate_limited: (e) => `You have started too many answers in a short time. Try again ${waitText(e.retryAfterMs)}.`,
  too_many_streams: () =>
    "Too many answers are open at once with your access. Close another tab, or wait for an answer to finish.",
  server_busy: () => "The server is at its limit of open answers. Try again in a few seconds.",
  draining: () => "The server is restarting. Try again in a moment.",
  unauthorized: () =>
    watchId
      ? "This answer is private. Open the watch link from the author's tab: it carries the access."
      : "This server needs an API key. Enter it under “API key” below, then send again.",
  invalid_api_key: () => "The server did not accept this API key. Check it under “API key” below.",
  invalid_token: () => "This watch link is not valid. Open a fresh one from the author's tab.",
  token_expired: () => "The access of this watch link has expired. Open a fresh link from the author's tab.",
  forbidden: () => "Your API key is not allowed to do this. Ask for a key with the right scopes.",
  prompt_too_large: () => "This conversation is too long for the server. Start a new chat, or send less text.",
  body_too_large: () => "This conversation is too long for the server. Start a new chat, or send less text.",
  unknown_model: () => "The server does not offer the model this page asked for.",
  provider_unavailable: () => "The model provider is not available on this server.",
  invalid_request: () => "The server refused this request as invalid.",
  expired: () => "This answer has expired: the server no longer keeps it.",
};

/** When no code is known (an answer from a proxy, say), the status says enough. */
const STATUS_TITLES = /** @type {Record<number, string>} */ ({
  401: "The server needs an API key. Enter it under “API key” below.",
  403: "You are not allowed to do this.",
  404: ERROR_TITLES.not_found,
  408: "The server took too long to read the request. Try again.",
  413: "This conversation is too long for the server. Start a new chat, or send less text.",
  429: "The server is receiving too many requests. Wait a moment, then try again.",
});

/** @param {number | null} ms */
function waitText(ms) {
  if (ms === null) return "in a moment";
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  return seconds < 90 ? `in ${seconds} s` : `in about ${Math.round(seconds / 60)} min`;
}

// ------------------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
// Where ssegate is mounted ("" at the root, "/sse" under a prefix): the server writes it into the page.
const BASE = document.querySelector('meta[name="ssegate-base"]')?.getAttribute("content") ?? "";
const watchId = params.get("watch");
// A watch link from a tab with an API key carries a stream token for that answer (in the fragment, so
// it is never sent to the server as part of the page's URL).
const watchToken = watchId ? new URLSearchParams(location.hash.slice(1)).get("token") ?? "" : "";

let apiKey = watchId ? "" : sessionStorage.getItem(API_KEY_STORAGE) ?? "";

/** A gateway client that sends this tab's credential, if any. */
function makeClient() {
  const credential = watchId ? watchToken : apiKey;
  return createGatewayClient({ baseUrl: BASE, headers: credential ? { Authorization: `Bearer ${credential}` } : {} });
}

let client = makeClient();

/** @type {Turn[]} */
let turns = watchId ? [] : loadTurns();
/** @type {{turn: AssistantTurn, reading: AbortController, stopRequested: boolean} | null} */
let active = null;

/** @returns {Turn[]} */
function loadTurns() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null");
    return Array.isArray(saved?.turns) ? saved.turns : [];
  } catch {
    return [];
  }
}

function saveTurns() {
  if (watchId) return; // a watching tab shows someone else's answer; it keeps no conversation
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ turns }));
}

/** @returns {AssistantTurn} */
function newAssistantTurn(/** @type {string | null} */ generationId) {
  return {
    role: "assistant",
    generationId,
    streamToken: watchToken,
    state: "connecting",
    text: "",
    thinking: "",
    tools: [],
    model: "",
    error: null,
    finishReason: "",
    stopReason: "",
    deltas: 0,
    outputTokens: null,
    sentAt: null,
    firstTokenAt: null,
    endedAt: null,
    received: 0,
    replayedTokens: 0,
  };
}

/** Forget what was received for a turn, to rebuild it from the stream's first event. */
function clearReceived(/** @type {AssistantTurn} */ turn) {
  Object.assign(turn, {
    text: "",
    thinking: "",
    thinkingSignature: undefined,
    redactedThinking: undefined,
    tools: [],
    error: null,
    finishReason: "",
    stopReason: "",
    deltas: 0,
    outputTokens: null,
    received: 0,
    replayedTokens: 0,
  });
}

// ------------------------------------------------------------------------------------------------------
// Elements
// ------------------------------------------------------------------------------------------------------

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const messagesEl = $("messages");
const emptyEl = $("empty");
const formEl = /** @type {HTMLFormElement} */ ($("composer"));
const promptEl = /** @type {HTMLTextAreaElement} */ ($("prompt"));
const sendEl = /** @type {HTMLButtonElement} */ ($("send"));
const stopEl = /** @type {HTMLButtonElement} */ ($("stop"));
const connEl = $("conn");
const connTextEl = $("conn-text");
const newChatEl = $("new-chat");
const keyPanelEl = /** @type {HTMLDetailsElement} */ ($("key-panel"));
const keyFormEl = /** @type {HTMLFormElement} */ ($("key-form"));
const keyInputEl = /** @type {HTMLInputElement} */ ($("api-key"));
const keyStateEl = $("key-state");
const keyForgetEl = /** @type {HTMLButtonElement} */ ($("key-forget"));

/**
 * The elements of one assistant answer.
 * @typedef {object} TurnView
 * @property {HTMLElement} root
 * @property {HTMLElement} chip
 * @property {HTMLElement} stats
 * @property {HTMLAnchorElement} watch
 * @property {HTMLDetailsElement} thinking
 * @property {HTMLElement} thinkingText
 * @property {HTMLElement} tools
 * @property {HTMLElement} content
 * @property {HTMLElement} error
 * @property {boolean} thinkingAuto
 */

/** @type {WeakMap<AssistantTurn, TurnView>} */
const views = new WeakMap();
/** @type {Set<AssistantTurn>} */
const dirty = new Set();
let frameRequested = false;

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderAll() {
  messagesEl.replaceChildren();
  for (const turn of turns) messagesEl.append(turn.role === "user" ? userView(turn) : assistantView(turn).root);
  emptyEl.hidden = turns.length > 0;
}

/** @param {UserTurn} turn */
function userView(turn) {
  const root = el("li", "msg user");
  root.append(el("div", "bubble", turn.content));
  return root;
}

/** @param {AssistantTurn} turn */
function assistantView(turn) {
  const root = el("li", "msg assistant");
  const meta = el("div", "meta");
  const chip = el("span", "chip");
  const stats = el("span", "stats");
  const watch = /** @type {HTMLAnchorElement} */ (el("a", "watch", "Watch in another tab"));
  watch.target = "_blank";
  watch.rel = "noopener";
  watch.append(el("span", "visually-hidden", " (opens a new tab)"));
  meta.append(chip, stats, watch);
  const thinking = /** @type {HTMLDetailsElement} */ (el("details", "thinking"));
  thinking.append(el("summary", "", "Thinking"));
  const thinkingText = el("div", "thinking-text");
  thinking.append(thinkingText);
  const tools = el("div", "tools");
  const content = el("div", "content markdown");
  const error = el("div", "error");
  error.setAttribute("role", "alert");
  root.append(meta, thinking, content, tools, error);
  announceAnswer(content);
  /** @type {TurnView} */
  const view = { root, chip, stats, watch, thinking, thinkingText, tools, content, error, thinkingAuto: true };
  // Thinking opens while it streams and folds away when the answer starts, unless the reader chose.
  thinking.querySelector("summary")?.addEventListener("click", () => {
    view.thinkingAuto = false;
  });
  views.set(turn, view);
  paint(turn);
  return view;
}

/**
 * The answer is a live region for screen readers. It is busy while it streams, so a reader hears the
 * finished answer once instead of every token (or every re-render of the markdown); the connection
 * indicator (role="status") says when it starts and ends, and an error is an alert.
 * @param {HTMLElement} content
 */
function announceAnswer(content) {
  content.setAttribute("aria-live", "polite");
  content.setAttribute("aria-busy", "true");
}

/**
 * A code block scrolls sideways when its lines are long: a keyboard user reaches it with Tab and
 * scrolls it with the arrow keys (WCAG 2.1.1; axe-core's scrollable-region-focusable).
 * @param {HTMLElement} content
 */
function focusableCode(content) {
  for (const block of content.querySelectorAll("pre")) block.tabIndex = 0;
}

/** The reader is at the end of the page: keep the newest text in view (but never pull them back down). */
function nearBottom() {
  const root = document.documentElement;
  return root.scrollHeight - (window.scrollY + window.innerHeight) < 120;
}

/** Re-render an answer at the next animation frame, however many deltas arrive before it. */
function schedule(/** @type {AssistantTurn} */ turn) {
  dirty.add(turn);
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    const following = nearBottom();
    for (const t of dirty) paint(t);
    dirty.clear();
    paintConnection();
    if (following) window.scrollTo({ top: document.documentElement.scrollHeight });
  });
}

const CHIP_TEXT = /** @type {Record<TurnState, string>} */ ({
  connecting: "Connecting…",
  streaming: "Streaming",
  reconnecting: "Reconnecting…",
  done: "Done",
  error: "Error",
  cancelled: "Stopped",
});

/** @param {AssistantTurn} turn */
function paint(turn) {
  const view = views.get(turn);
  if (!view) return;
  view.root.dataset.state = turn.state;
  view.root.dataset.generationId = turn.generationId ?? "";
  view.content.setAttribute("aria-busy", String(!TERMINAL.has(turn.state)));
  view.root.classList.toggle("live", !TERMINAL.has(turn.state));
  view.chip.textContent =
    turn.state === "cancelled" && turn.stopReason === "abandoned" ? "Stopped (no viewers)" : CHIP_TEXT[turn.state];
  view.chip.dataset.state = turn.state;
  view.stats.textContent = statsText(turn);
  if (turn.generationId) {
    const access = turn.streamToken ? `#token=${encodeURIComponent(turn.streamToken)}` : "";
    view.watch.href = `${BASE}/?watch=${encodeURIComponent(turn.generationId)}${access}`;
    view.watch.hidden = TERMINAL.has(turn.state) && !watchId;
  } else {
    view.watch.hidden = true;
  }
  view.thinking.hidden = turn.thinking === "";
  if (view.thinkingAuto) view.thinking.open = turn.text === "" && !TERMINAL.has(turn.state);
  if (view.thinkingText.textContent !== turn.thinking) view.thinkingText.textContent = turn.thinking;
  paintTools(view.tools, turn.tools);
  if (view.content.dataset.rendered !== String(turn.text.length)) {
    view.content.innerHTML = renderMarkdown(turn.text);
    view.content.dataset.rendered = String(turn.text.length);
    focusableCode(view.content);
  }
  view.error.hidden = !turn.error;
  if (turn.error) {
    view.error.replaceChildren(el("strong", "", turn.error.title));
    if (turn.error.detail) view.error.append(el("span", "detail", turn.error.detail));
  }
}

/**
 * @param {HTMLElement} container
 * @param {ToolCall[]} tools
 */
function paintTools(container, tools) {
  while (container.children.length < tools.length) {
    const card = el("div", "tool");
    card.append(el("div", "tool-head"), el("pre", "tool-input"), el("pre", "tool-result"));
    container.append(card);
  }
  tools.forEach((tool, index) => {
    const card = /** @type {HTMLElement} */ (container.children[index]);
    const head = /** @type {HTMLElement} */ (card.children[0]);
    const input = /** @type {HTMLElement} */ (card.children[1]);
    head.textContent = `${tool.complete ? "Tool call" : "Calling tool…"} ${tool.name}`;
    card.classList.toggle("complete", tool.complete);
    const shown = tool.complete ? prettyJSON(tool.input) : tool.input;
    if (input.textContent !== shown) input.textContent = shown;
    paintToolResult(/** @type {HTMLElement} */ (card.children[2]), tool);
  });
}

/**
 * What a built-in tool returned, under its call.
 * @param {HTMLElement} element
 * @param {ToolCall} tool
 */
function paintToolResult(element, tool) {
  element.hidden = tool.result === undefined;
  const shown = tool.result === undefined ? "" : `${tool.isError ? "Failed: " : "→ "}${tool.result}`;
  if (element.textContent !== shown) element.textContent = shown;
  element.classList.toggle("failed", Boolean(tool.isError));
}

/** @param {string} text */
function prettyJSON(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** @param {AssistantTurn} turn */
function statsText(turn) {
  const parts = [];
  if (turn.model) parts.push(turn.model);
  if (turn.sentAt !== null && turn.firstTokenAt !== null) {
    parts.push(`first token ${formatMs(turn.firstTokenAt - turn.sentAt)}`);
  }
  const tokens = turn.outputTokens ?? turn.deltas;
  if (tokens > 0) parts.push(`${tokens} tokens`);
  if (turn.replayedTokens > 0) parts.push(`${turn.replayedTokens} replayed`);
  const rate = tokensPerSecond(turn);
  if (rate !== null) parts.push(`${rate.toFixed(1)} tok/s`);
  return parts.join(" · ");
}

/**
 * The model's rate, from live arrivals only. A tab that saw the first token arrive knows the whole
 * answer's span (wall-clock, across reloads) and, once it has caught up, every token in it: all of
 * them over that span. Any other tab (a watcher, a reload before the first token) counts only the
 * deltas it saw arrive live, over the time since the first of them.
 * @param {AssistantTurn} turn
 * @returns {number | null}
 */
function tokensPerSecond(turn) {
  const end = turn.endedAt ?? Date.now();
  if (turn.firstTokenAt !== null) {
    const tokens = turn.outputTokens ?? turn.deltas;
    const seconds = (end - turn.firstTokenAt) / 1000;
    return tokens > 1 && seconds > 0.05 ? tokens / seconds : null;
  }
  // The later half of the time since the first live delta: a catch-up that ran longer than
  // CATCH_UP_MS (a busy page takes its history in several slow bites) falls out of it.
  const times = liveArrivals.get(turn) ?? [];
  if (times.length < 2) return null;
  const from = (times[0] + end) / 2;
  const seconds = (end - from) / 1000;
  const tokens = times.length - times.findIndex((t) => t >= from);
  // Half a second of live tokens before a figure: fewer say more about timer jitter than the model.
  return seconds >= 0.5 && tokens > 0 && tokens <= times.length ? tokens / seconds : null;
}

/** @param {number} ms */
function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** The page-wide indicator follows the latest answer. */
function paintConnection() {
  const last = [...turns].reverse().find((t) => t.role === "assistant");
  const state = last && last.role === "assistant" ? last.state : "idle";
  connEl.dataset.state = state;
  connTextEl.textContent = state === "idle" ? "Ready" : CHIP_TEXT[/** @type {TurnState} */ (state)];
  const busy = active !== null;
  sendEl.disabled = busy || watchId !== null;
  const stopHad = document.activeElement === stopEl;
  stopEl.hidden = !busy;
  stopEl.disabled = busy && active !== null && active.stopRequested;
  keepFocus(stopHad);
}

/**
 * Stop takes Send's place while an answer streams (app.css) and goes when it ends: a keyboard user
 * who pressed it would be left on nothing, so the focus goes back to the message box.
 * @param {boolean} stopHad  the focus was on Stop before this repaint
 */
function keepFocus(stopHad) {
  if (stopHad && (stopEl.hidden || stopEl.disabled)) promptEl.focus();
}

// A reload mid-answer: keep how many events this tab had (saveTurns runs only at start and end).
addEventListener("pagehide", saveTurns);

// Keep tokens/s moving between events while an answer streams.
setInterval(() => {
  if (active) schedule(active.turn);
}, 500);

// ------------------------------------------------------------------------------------------------------
// Streaming
// ------------------------------------------------------------------------------------------------------

/**
 * Apply one gateway event to an answer.
 * @param {AssistantTurn} turn
 * @param {GenerationEvent} event
 */
function apply(turn, event) {
  /** @type {any} */ // each type has its payload (GenerationEvent); read here with defaults
  const data = event.data ?? {};
  switch (event.type) {
    case "start":
      if (typeof data.id === "string") turn.generationId = data.id;
      turn.model = String(data.model ?? "");
      break;
    case "text":
      turn.text += String(data.delta ?? "");
      noteToken(turn);
      break;
    case "thinking":
      if (typeof data.signature === "string" || typeof data.redacted === "string") {
        keepThinkingProof(turn, data);
        break;
      }
      turn.thinking += String(data.delta ?? "");
      noteToken(turn);
      break;
    case "tool_call":
      applyToolCall(turn, data);
      break;
    case "status":
      if (data.model) turn.model = String(data.model);
      break;
    case "usage":
      if (typeof data.output_tokens === "number") turn.outputTokens = data.output_tokens;
      break;
    case "reset":
      // The resume point was lost; the stream starts over from its earliest event: rebuild.
      clearReceived(turn);
      break;
    case "done":
      turn.finishReason = String(data.finish_reason ?? "");
      if (typeof data.usage?.output_tokens === "number") turn.outputTokens = data.usage.output_tokens;
      if (turn.finishReason === "cancelled") {
        turn.state = "cancelled";
        turn.stopReason = String(data.reason ?? "cancelled");
      } else {
        turn.state = "done";
      }
      turn.endedAt = Date.now();
      break;
    case "error":
      turn.state = "error";
      turn.error = describeError(String(data.code ?? "upstream_error"), String(data.message ?? ""));
      turn.endedAt = Date.now();
      break;
    default:
    // Unknown event types are for newer clients; ignore them.
  }
}

/** @param {AssistantTurn} turn */
function noteToken(turn) {
  turn.deltas += 1;
  if (replayedArrival.has(turn)) {
    turn.replayedTokens += 1;
  } else {
    const now = Date.now();
    // The generation's first token, seen arriving: the answer's span is known from here on.
    if (turn.deltas === 1) turn.firstTokenAt = now;
    const times = liveArrivals.get(turn) ?? [];
    times.push(now);
    liveArrivals.set(turn, times);
  }
  if (turn.state === "connecting" || turn.state === "reconnecting") turn.state = "streaming";
}

/**
 * Replay vs live. A followed generation (after a reload, or watched from another tab) starts with
 * its history from the server's log, all at once: those events say nothing about the model's pace.
 * Replays are the events a reloaded tab had already received (by count, exact), and any that come
 * in the first CATCH_UP_MS after the stream's first event (the history's burst, and the events the
 * model wrote while the page was away). Everything after that arrives live.
 * @type {WeakMap<AssistantTurn, {seenBefore: number, firstAt: number | null}>}
 */
const catchingUp = new WeakMap();
/** The turns whose event being applied right now is a replay. @type {WeakSet<AssistantTurn>} */
const replayedArrival = new WeakSet();
const CATCH_UP_MS = 250;
/** When each live delta arrived, for a tab that did not see the first token (not saved). */
/** @type {WeakMap<AssistantTurn, number[]>} */
const liveArrivals = new WeakMap();

/**
 * Count an event arriving for `turn` and classify it (read by noteToken while it is applied).
 * @param {AssistantTurn} turn
 */
function noteArrival(turn) {
  const index = turn.received;
  turn.received += 1;
  replayedArrival.delete(turn);
  const catchUp = catchingUp.get(turn);
  if (!catchUp) return;
  const now = Date.now();
  catchUp.firstAt ??= now;
  if (index < catchUp.seenBefore || now - catchUp.firstAt <= CATCH_UP_MS) {
    replayedArrival.add(turn);
  } else {
    catchingUp.delete(turn);
  }
}

/**
 * @param {AssistantTurn} turn
 * @param {any} data
 */
function applyToolCall(turn, data) {
  const id = String(data.id ?? "");
  let tool = turn.tools.find((t) => t.id === id);
  if (!tool) {
    tool = { id, name: String(data.name ?? "tool"), input: "", complete: false };
    turn.tools.push(tool);
  }
  if (data.phase === "delta") tool.input += String(data.delta ?? "");
  if (data.phase === "end") {
    tool.complete = true;
    tool.args = data.input ?? null;
  }
  if (data.name) tool.name = String(data.name);
}

/**
 * @param {string} code
 * @param {string} message
 */
function describeError(code, message) {
  return { title: ERROR_TITLES[code] ?? "The answer failed.", detail: message ? `${message} (${code})` : code };
}

/**
 * The request itself failed (not an `error` event): the server refused it (a limit, a missing key, an
 * unknown generation, ...), or could not be reached at all.
 * @param {unknown} failure
 */
function describeFailure(failure) {
  const error = explainStreamError(failure);
  if (error instanceof GatewayError) return describeRefusal(error);
  if (error instanceof StreamGaveUpError || error instanceof TypeError) {
    return describeError("network", error.message);
  }
  return describeError("internal", String(error));
}

/** @param {GatewayError} error */
function describeRefusal(error) {
  const title =
    REFUSAL_TITLES[error.code]?.(error) ??
    ERROR_TITLES[error.code] ??
    STATUS_TITLES[error.status] ??
    (error.status >= 500 ? ERROR_TITLES.internal : "The server refused this request.");
  const detail = error.message && error.message !== `HTTP ${error.status}` ? `${error.message} (${error.code})` : "";
  return { title, detail: detail || `HTTP ${error.status} (${error.code})` };
}

/**
 * Read a generation into `turn` until it ends.
 * @param {AssistantTurn} turn
 * @param {(handlers: import("./ssegate.js").FollowOptions) => GenerationStream | Promise<GenerationStream>} open
 */
async function run(turn, open) {
  const reading = new AbortController();
  active = { turn, reading, stopRequested: false };
  schedule(turn);
  const handlers = /** @type {import("./ssegate.js").FollowOptions} */ ({
    signal: reading.signal,
    onGenerationId: (id) => {
      turn.generationId = id;
      rememberGeneration(id);
      if (active?.stopRequested) void stop();
    },
    onEvent: (event) => {
      noteArrival(turn);
      apply(turn, event);
      if (event.type === "start" || TERMINAL.has(turn.state)) saveTurns();
      schedule(turn);
    },
    onStateChange: (state) => {
      if (TERMINAL.has(turn.state)) return;
      if (state === "reconnecting") turn.state = "reconnecting";
      else if (state === "open") turn.state = turn.deltas > 0 ? "streaming" : "connecting";
      schedule(turn);
    },
    maxAttempts: 8,
  });
  try {
    const stream = await open(handlers);
    const terminal = await stream.done;
    if (!terminal && !TERMINAL.has(turn.state)) {
      // Stopped reading on request, or a 204: the generation ended and its events are no longer kept.
      turn.state = active?.stopRequested ? "cancelled" : "done";
    }
  } catch (failure) {
    if (reading.signal.aborted && active?.stopRequested) {
      turn.state = "cancelled"; // stopped before the server even answered
    } else {
      turn.state = "error";
      turn.error = describeFailure(failure);
      const refusal = explainStreamError(failure);
      if (refusal instanceof GatewayError && refusal.status === 401 && !watchId) askForKey();
    }
  } finally {
    active = null;
    catchingUp.delete(turn);
    turn.endedAt ??= Date.now();
    saveTurns();
    schedule(turn);
  }
}

/** @param {string} id */
function rememberGeneration(id) {
  if (watchId) return;
  history.replaceState(null, "", `#g=${encodeURIComponent(id)}`);
  saveTurns();
}

/**
 * The conversation for the model. A message whose answer the server refused (it never started) is left
 * out: the model never saw it, and the person usually sends it again.
 * @returns {any[]}  messages of the request model (an answer with tool calls: its calls and their results)
 */
function conversation() {
  /** @type {any[]} */
  const messages = [];
  turns.forEach((t, index) => {
    if (t.role === "user") {
      const answer = turns[index + 1];
      if (answer?.role === "assistant" && answer.state === "error" && !answer.generationId) return;
      messages.push({ role: "user", content: t.content });
    } else if (answeredTools(t)) {
      messages.push(...toolTurnMessages(t));
    } else if (t.text !== "") {
      messages.push({ role: "assistant", content: t.text });
    }
  });
  return messages;
}

/**
 * With an API key: start with a JSON POST, whose answer carries a stream token for the watch link,
 * then read the answer with the key. (Without one, generate() starts and streams in one request.)
 * @param {AssistantTurn} turn
 * @param {import("./ssegate.js").GenerationRequest} request
 * @param {import("./ssegate.js").FollowOptions} handlers
 */
async function startAndFollow(turn, request, handlers) {
  const created = await client.startGeneration(request, { signal: handlers.signal });
  turn.streamToken = typeof created.stream_token === "string" ? created.stream_token : "";
  handlers.onGenerationId?.(created.id);
  return client.follow(created.id, handlers);
}

/** @param {string} prompt */
async function send(prompt) {
  /** @type {UserTurn} */
  const userTurn = { role: "user", content: prompt };
  turns.push(userTurn);
  const messages = conversation();
  const turn = newAssistantTurn(null);
  turn.sentAt = Date.now();
  turns.push(turn);
  saveTurns();
  messagesEl.append(userView(userTurn), assistantView(turn).root);
  emptyEl.hidden = true;
  // The reader just asked: bring the answer into view and keep following it as it grows.
  window.scrollTo({ top: document.documentElement.scrollHeight });
  turn.state = "connecting";
  await ask(turn, messages);
  if (turn.state === "error" && !turn.generationId && promptEl.value === "") {
    // Refused before it started: give the message back, so sending it again is one keystroke.
    promptEl.value = prompt;
    autosize();
  }
  await continueToolLoop(turn);
}

/**
 * Start an answer to `messages` (with the page's tools offered) and follow it into `turn`.
 * @param {AssistantTurn} turn
 * @param {any[]} messages
 */
async function ask(turn, messages) {
  const request = /** @type {any} */ ({ messages, tools: PAGE_TOOLS });
  await run(turn, (handlers) =>
    apiKey ? startAndFollow(turn, request, handlers) : client.generate(request, handlers),
  );
}

// ------------------------------------------------------------------------------------------------------
// The tool loop: an answer that ends calling the page's own tools gets their results sent back,
// and the model goes on, until it answers in words (or calls a tool the page does not have).
// ------------------------------------------------------------------------------------------------------

const MAX_TOOL_ROUNDS = 5;

/** @param {AssistantTurn} first */
async function continueToolLoop(first) {
  let turn = first;
  for (let round = 0; round < MAX_TOOL_ROUNDS; round += 1) {
    if (turn.state !== "done" || turn.finishReason !== "tool_use") return;
    if (!turn.tools.length || !turn.tools.every((tool) => tool.complete && isPageTool(tool.name))) return;
    for (const tool of turn.tools) {
      const { content, isError } = runPageTool(tool.name, tool.args ?? {});
      tool.result = content;
      tool.isError = isError;
    }
    saveTurns();
    schedule(turn);
    const next = newAssistantTurn(null);
    next.sentAt = performance.now();
    next.state = "connecting";
    const messages = conversation();
    turns.push(next);
    saveTurns();
    messagesEl.append(assistantView(next).root);
    await ask(next, messages);
    turn = next;
  }
}

/**
 * The signature that closes the answer's thinking, or thinking the provider sent encrypted: both go
 * back with the tool results.
 * @param {AssistantTurn} turn
 * @param {any} data
 */
function keepThinkingProof(turn, data) {
  if (typeof data.signature === "string") turn.thinkingSignature = data.signature;
  if (typeof data.redacted === "string") turn.redactedThinking = [...(turn.redactedThinking ?? []), data.redacted];
}

/**
 * Whether an answer's tool calls all have results (then it is sent as calls and results).
 * @param {AssistantTurn} turn
 */
function answeredTools(turn) {
  return turn.tools.length > 0 && turn.tools.every((tool) => tool.result !== undefined);
}

/**
 * An answer with tool calls, as the request model carries it: the assistant's text and calls,
 * then one tool message per result.
 * @param {AssistantTurn} turn
 */
function toolTurnMessages(turn) {
  /** @type {any[]} */
  const content = [];
  // A provider that signed its thinking (Anthropic) wants it back, first, to go on after tools.
  if (turn.thinkingSignature) {
    content.push({ type: "thinking", thinking: turn.thinking, signature: turn.thinkingSignature });
  }
  for (const data of turn.redactedThinking ?? []) content.push({ type: "redacted_thinking", data });
  if (turn.text) content.push({ type: "text", text: turn.text });
  for (const tool of turn.tools) {
    content.push({ type: "tool_use", id: tool.id, name: tool.name, input: tool.args ?? {} });
  }
  const results = turn.tools.map((tool) => ({
    role: "tool",
    tool_use_id: tool.id,
    content: tool.result || "(empty)",
    is_error: Boolean(tool.isError),
  }));
  return [{ role: "assistant", content }, ...results];
}

/** Follow an existing generation from its first event, rebuilding the answer. */
async function follow(/** @type {AssistantTurn} */ turn) {
  if (!turn.generationId) return;
  // What this tab received before a reload comes again first: replays, not the model's pace.
  catchingUp.set(turn, { seenBefore: turn.received, firstAt: null });
  liveArrivals.delete(turn);
  clearReceived(turn);
  // sentAt and firstTokenAt are wall-clock times: still true after a reload.
  turn.endedAt = null;
  turn.state = "connecting";
  const id = turn.generationId;
  schedule(turn);
  await run(turn, (handlers) => client.follow(id, handlers));
}

async function stop() {
  if (!active) return;
  active.stopRequested = true;
  paintConnection();
  const id = active.turn.generationId;
  if (!id) return; // cancelled as soon as the server names it (onGenerationId)
  try {
    await client.cancel(id);
  } catch (failure) {
    // Already finished, or unreachable: stop reading; what was shown stays.
    if (!(failure instanceof GatewayError && failure.status === 409)) active?.reading.abort();
  }
}

// ------------------------------------------------------------------------------------------------------
// Input
// ------------------------------------------------------------------------------------------------------

formEl.addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = promptEl.value.trim();
  if (!prompt || active || watchId) return;
  promptEl.value = "";
  autosize();
  void send(prompt);
});

promptEl.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    formEl.requestSubmit();
  }
});

function autosize() {
  promptEl.style.height = "auto";
  promptEl.style.height = `${Math.min(promptEl.scrollHeight, 240)}px`;
}
promptEl.addEventListener("input", autosize);

stopEl.addEventListener("click", () => void stop());

newChatEl.addEventListener("click", () => {
  if (active) {
    // Nobody will read the rest of this answer: stop paying for it.
    if (active.turn.generationId) client.cancel(active.turn.generationId).catch(() => {});
    active.reading.abort();
  }
  turns = [];
  saveTurns();
  history.replaceState(null, "", `${BASE}/`);
  renderAll();
  paintConnection();
  promptEl.focus();
});

// The API key: kept for this tab only, sent with every request from now on.
function paintKey() {
  keyStateEl.textContent = apiKey ? " · set" : "";
  keyForgetEl.hidden = !apiKey;
}

/** The server wants a key (401): open the key field and put the cursor in it. */
function askForKey() {
  keyPanelEl.open = true;
  keyInputEl.focus();
  keyInputEl.select();
}

/** @param {string} key */
function useKey(key) {
  apiKey = key;
  if (key) sessionStorage.setItem(API_KEY_STORAGE, key);
  else sessionStorage.removeItem(API_KEY_STORAGE);
  client = makeClient();
  paintKey();
}

keyFormEl.addEventListener("submit", (event) => {
  event.preventDefault();
  useKey(keyInputEl.value.trim());
  keyInputEl.value = "";
  keyPanelEl.open = false;
  promptEl.focus();
});

keyForgetEl.addEventListener("click", () => {
  useKey("");
  keyInputEl.value = "";
  keyInputEl.focus();
});

document.querySelectorAll("[data-example]").forEach((button) => {
  button.addEventListener("click", () => {
    promptEl.value = /** @type {HTMLElement} */ (button).dataset.example ?? "";
    autosize();
    promptEl.focus();
  });
});

// ------------------------------------------------------------------------------------------------------
// Start-up
// ------------------------------------------------------------------------------------------------------

function start() {
  if (watchId) {
    document.body.classList.add("watching");
    $("watch-id").textContent = watchId;
    const turn = newAssistantTurn(watchId);
    turns = [turn];
    renderAll();
    void follow(turn);
  } else {
    const hashId = new URLSearchParams(location.hash.slice(1)).get("g");
    if (hashId && !turns.some((t) => t.role === "assistant" && t.generationId === hashId)) {
      // A link to a running answer without the conversation behind it: show the answer alone.
      turns.push(newAssistantTurn(hashId));
    }
    renderAll();
    const resume = turns.at(-1);
    if (resume && resume.role === "assistant" && !TERMINAL.has(resume.state)) {
      if (resume.generationId) void follow(resume);
      else {
        // The page closed before the server named the answer: nothing to pick up.
        resume.state = "error";
        resume.error = { title: "This answer was interrupted before it started.", detail: "" };
        saveTurns();
        schedule(resume);
      }
    }
    promptEl.focus();
  }
  paintKey();
  paintConnection();
}

/** A small window for tests: the raw text as the server sent it, per answer. */
Object.defineProperty(window, "__ssegate", {
  value: Object.freeze({
    answers: () =>
      turns
        .filter((t) => t.role === "assistant")
        .map((t) => {
          const a = /** @type {AssistantTurn} */ (t);
          return { generationId: a.generationId, state: a.state, text: a.text, thinking: a.thinking, error: a.error };
        }),
  }),
});

start();

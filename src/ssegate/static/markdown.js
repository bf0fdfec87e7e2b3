// @ts-check
/**
 * Markdown to inert HTML for untrusted model output.
 *
 * Two layers, so one mistake is not enough: marked renders raw HTML in the markdown as visible text
 * (a model that writes `<script>` shows the tag, it does not run it), then DOMPurify removes anything
 * active that could remain (event handlers, script-capable URLs, frames, forms, styles). Links open in a
 * new tab without access to this page; images become plain links, so output cannot make the browser
 * fetch a URL by itself (a known way to leak a conversation through a prompt injection).
 *
 * @module markdown
 */

import DOMPurify from "./vendor/purify.es.mjs";
import { Marked } from "./vendor/marked.esm.js";

/** Link targets allowed in model output; everything else (javascript:, data:, vbscript:, ...) is dropped. */
const SAFE_HREF = /^(?:https?:|mailto:|#)/i;

/** @param {string} text */
export function escapeHTML(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    /** @param {{text: string}} token */
    html(token) {
      return escapeHTML(token.text);
    },
    /** @param {{href: string, text: string}} token */
    image(token) {
      return `<a href="${escapeHTML(token.href)}">${escapeHTML(token.text || "image")}</a>`;
    },
  },
});

const purifier = DOMPurify(window);

purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName !== "A") return;
  const href = node.getAttribute("href") ?? "";
  if (!SAFE_HREF.test(href.trim())) node.removeAttribute("href");
  else if (!href.startsWith("#")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY_CONFIG = {
  FORBID_TAGS: ["style", "img", "iframe", "frame", "object", "embed", "form", "input", "button", "textarea",
    "select", "svg", "math", "video", "audio", "source", "link", "meta", "base"],
  FORBID_ATTR: ["style", "srcset", "formaction", "action"],
  ALLOW_DATA_ATTR: false,
  ADD_ATTR: ["target"],
};

/**
 * Render untrusted markdown to sanitised HTML.
 * @param {string} markdown
 * @returns {string}
 */
export function renderMarkdown(markdown) {
  const html = /** @type {string} */ (marked.parse(markdown));
  return String(purifier.sanitize(html, PURIFY_CONFIG));
}

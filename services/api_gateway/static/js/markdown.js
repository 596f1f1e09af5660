// Model output, answers and reasoning alike, is untrusted. It is rendered as markdown in which raw HTML is shown as text, code is
// highlighted, links open elsewhere, and images are links (a reply must not make the browser fetch
// anything). DOMPurify then cleans the result as a second line of defence, and the page's
// Content-Security-Policy forbids inline script as a third.

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.js";
import hljs from "../vendor/highlight/highlight.min.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** `text` with HTML's special characters escaped. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const marked = new Marked({
  gfm: true,
  breaks: true, // chat replies use single newlines as line breaks
  renderer: {
    html({ text, block }) {
      const shown = escapeHtml(text);
      return block ? `<p class="raw-html">${shown}</p>` : shown;
    },
    image({ href, text }) {
      const label = escapeHtml(text || href);
      return `<a href="${escapeHtml(href)}">[image: ${label}]</a>`;
    },
    code({ text, lang }) {
      const language = (lang || "").trim().split(/\s+/)[0].toLowerCase();
      const known = language && hljs.getLanguage(language);
      const highlighted = known ? hljs.highlight(text, { language, ignoreIllegals: true }).value : escapeHtml(text);
      const label = known ? `<span class="code-lang">${escapeHtml(language)}</span>` : "";
      return `<pre class="code-block">${label}<code class="hljs${known ? ` language-${escapeHtml(language)}` : ""}">${highlighted}</code></pre>\n`;
    },
  },
});

const purifier = DOMPurify();
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});
const PURIFY_OPTIONS = {
  USE_PROFILES: { html: true }, // no SVG or MathML
  FORBID_TAGS: ["img", "picture", "video", "audio", "source", "style", "form", "input", "button", "textarea", "select", "iframe"],
  FORBID_ATTR: ["style", "srcset"],
  ALLOW_DATA_ATTR: false,
};

/** Sanitized HTML for a markdown string from the model. */
export function renderMarkdown(text) {
  return purifier.sanitize(marked.parse(text), PURIFY_OPTIONS);
}

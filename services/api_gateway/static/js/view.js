// DOM for the chat list and the messages. Text from users and models only ever goes in through
// textContent, or through renderMarkdown() (sanitized) for answers and reasoning.

import { renderMarkdown } from "./markdown.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The sidebar's list of chats; `actions.select(id)` / `actions.remove(id)` on click. */
export function renderChatList(list, chats, currentId, actions) {
  list.replaceChildren(...chats.filter((c) => c.messages.length || c.id === currentId).map((chat) => {
    const item = el("li", chat.id === currentId ? "chat-item current" : "chat-item");
    const open = el("button", "chat-open", chat.title);
    open.type = "button";
    if (chat.id === currentId) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => actions.select(chat.id));
    const remove = el("button", "chat-delete", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete chat: ${chat.title}`);
    remove.addEventListener("click", () => actions.remove(chat.id));
    item.append(open, remove);
    return item;
  }));
}

function userElement(message) {
  const article = el("article", "msg user");
  const bubble = el("div", "bubble");
  if (message.images.length) {
    const images = el("div", "msg-images");
    for (const image of message.images) {
      const figure = el("figure", "msg-image");
      if (image.url) {
        const img = el("img");
        img.src = image.url;
        img.alt = image.name;
        img.referrerPolicy = "no-referrer";
        figure.append(img);
      } else {
        figure.append(el("span", "image-missing", `${image.name}: not kept (browser storage was full)`));
      }
      if (typeof image.caption === "string") {
        // What the text model was told about this image (the answer's proxy_vision): always as text.
        const caption = el("figcaption", "image-caption", image.caption);
        caption.title = image.captionCached ? "Vision model's caption (from the cache)" : "Vision model's caption";
        figure.append(caption);
      }
      images.append(figure);
    }
    bubble.append(images);
  }
  if (message.text) bubble.append(el("p", "text", message.text));
  article.append(bubble);
  return article;
}

function assistantElement() {
  const article = el("article", "msg assistant");
  const status = el("p", "status");
  status.append(el("span", "spinner"), el("span", "status-text"));
  const reasoning = el("details", "reasoning");
  reasoning.append(el("summary", "", "Reasoning"), el("div", "reasoning-text markdown"));
  const error = el("div", "error");
  error.setAttribute("role", "alert");
  error.append(el("strong", "error-title"), el("p", "error-message"));
  article.append(status, reasoning, el("div", "content markdown"), error, el("footer", "meta"));
  return article;
}

const STATUS = {
  waiting: () => "Waiting for the model…",
  describing: (m) => `Describing ${m.imageCount} image${m.imageCount === 1 ? "" : "s"}…`,
  looking: (m) => `Looking at ${m.imageCount} image${m.imageCount === 1 ? "" : "s"}…`,
};

function seconds(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function metaParts(message) {
  const { usage, finishReason, timing, ttftMs, totalMs, decodeMs } = message.meta;
  const parts = [];
  if (message.status === "stopped") parts.push(["stopped", "Stopped"]);
  if (finishReason === "length") parts.push(["finish", "cut at max tokens"]);
  if (usage) {
    const reasoning = usage.completion_tokens_details?.reasoning_tokens || 0; // of the completion tokens
    const ofWhich = reasoning > 0 ? ` (${reasoning} reasoning)` : "";
    parts.push(["usage", `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens${ofWhich}`]);
    if (decodeMs > 100 && usage.completion_tokens > 1) { // shorter runs measure the network, not the model
      parts.push(["speed", `${(usage.completion_tokens / (decodeMs / 1000)).toFixed(1)} tok/s`]);
    }
  }
  if (ttftMs !== null && totalMs !== null) parts.push(["time", `first token ${seconds(ttftMs)} · total ${seconds(totalMs)}`]);
  else if (totalMs !== null) parts.push(["time", `total ${seconds(totalMs)}`]);
  if (timing) {
    parts.push(["timing", `images: fetch ${seconds(timing.fetch_ms)} · vision ${seconds(timing.vision_ms)} · text first token ${seconds(timing.text_ttft_ms)}`]);
  }
  if (message.model) parts.push(["model", message.model]);
  return parts;
}

const shown = new WeakMap(); // element -> the markdown it shows

/** Render `text` into `node` unless it already shows it: a long reasoning is not parsed again for every answer token. */
function showMarkdown(node, text) {
  if (shown.get(node) === text) return;
  shown.set(node, text);
  node.innerHTML = renderMarkdown(text);
}

/** Bring an assistant message's element up to date; `canRetry` offers a Retry button for a failed answer. */
export function updateAssistant(article, message, canRetry = false) {
  article.dataset.state = message.status;
  article.dataset.phase = message.phase;
  const statusText = STATUS[message.phase]?.(message);
  const status = article.querySelector(".status");
  status.hidden = !(message.status === "streaming" && statusText);
  status.querySelector(".status-text").textContent = statusText || "";

  // Reasoning comes in its own field (completion.js), never inside the answer. While it streams and no
  // answer has started, the block is open and says "Thinking…"; it closes when the answer starts (or the
  // stream ends). Only that change of state opens or closes it: a reader's own toggle is left alone.
  const reasoning = message.reasoning || ""; // chats saved by older versions may lack the field
  const thinking = message.status === "streaming" && reasoning !== "" && !message.content;
  const details = article.querySelector(".reasoning");
  details.hidden = !reasoning;
  if (article.dataset.thinking !== String(thinking)) {
    article.dataset.thinking = String(thinking);
    details.open = thinking;
  }
  details.querySelector("summary").textContent = thinking ? "Thinking…" : "Reasoning";
  showMarkdown(details.querySelector(".reasoning-text"), reasoning);
  showMarkdown(article.querySelector(".content"), message.content);

  const error = article.querySelector(".error");
  error.hidden = !message.error;
  if (message.error) {
    const { status: http, code, type } = message.error;
    error.querySelector(".error-title").textContent = ["Error", http, code || type].filter(Boolean).join(" · ");
    error.querySelector(".error-message").textContent = message.error.message;
  }

  const meta = article.querySelector(".meta");
  meta.hidden = message.status === "streaming";
  if (!meta.hidden) {
    meta.replaceChildren(...metaParts(message).map(([kind, text]) => el("span", kind, text)));
    if (message.status === "error" && canRetry) {
      const retry = el("button", "retry quiet", "Retry");
      retry.type = "button";
      retry.dataset.action = "retry";
      meta.append(retry);
    }
  }
}

/** A new element for `message`. */
export function messageElement(message, canRetry = false) {
  if (message.role === "user") return userElement(message);
  const article = assistantElement();
  updateAssistant(article, message, canRetry);
  return article;
}

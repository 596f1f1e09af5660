// One streamed answer: feeds the stream's events into the assistant message object, which the view renders
// and the store saves. No DOM here.

import { ApiError, streamChat } from "./api.js";
import { parseTiming } from "./sse.js";

/**
 * A new assistant message for a request carrying `imageCount` images. Its `phase` drives the status
 * line: "describing" while images are on their way through the vision model (the request has images and
 * no token has arrived), "looking" for a model that sees images itself (`native`: nothing is captioned),
 * "waiting" for a text-only request before its first token, then "writing".
 */
export function newAssistantMessage(model, imageCount, native = false) {
  const phase = imageCount === 0 ? "waiting" : native ? "looking" : "describing";
  return {
    role: "assistant", model, content: "", reasoning: "", status: "streaming",
    phase, imageCount,
    error: null, meta: { usage: null, finishReason: null, timing: null, ttftMs: null, totalMs: null },
  };
}

/**
 * Stream `body` into `message`, calling `onUpdate()` after every change. Resolves when the answer is
 * complete, stopped (`signal` aborted) or failed; never rejects: the outcome is in `message.status`.
 * `onCaptions(proxyVision)` gets the captions the vision model made for the request's images (the one
 * chunk that carries `proxy_vision`; only when the server shows captions, and only for proxied images).
 */
export async function runCompletion(message, body, { apiKey, signal, onUpdate, onCaptions = () => {} }) {
  const started = performance.now();
  let firstTokenAt = null;
  try {
    for await (const { comment, chunk } of streamChat(body, { apiKey, signal })) {
      if (comment !== undefined) {
        if (comment.startsWith("timing ")) message.meta.timing = parseTiming(comment);
        continue; // keep-alives only say the server is still at work; the phase already says so
      }
      if (chunk.usage) message.meta.usage = chunk.usage;
      if (chunk.proxy_vision) {
        onCaptions(chunk.proxy_vision);
        if (message.phase === "describing") message.phase = "waiting"; // described: the text model is next
      }
      const choice = chunk.choices?.[0];
      if (!choice) {
        onUpdate();
        continue;
      }
      const delta = choice.delta || {};
      const reasoning = reasoningOf(delta);
      const content = typeof delta.content === "string" ? delta.content : "";
      if (content || reasoning) {
        if (firstTokenAt === null) firstTokenAt = performance.now();
        message.content += content;
        message.reasoning += reasoning;
        message.phase = "writing";
      }
      if (choice.finish_reason) message.meta.finishReason = choice.finish_reason;
      onUpdate();
    }
    message.status = "done";
  } catch (error) {
    if (signal.aborted) {
      message.status = "stopped";
    } else {
      message.status = "error";
      message.error = describeError(error);
    }
  } finally {
    const ended = performance.now();
    message.meta.totalMs = ended - started;
    message.meta.ttftMs = firstTokenAt === null ? null : firstTokenAt - started;
    message.meta.decodeMs = firstTokenAt === null ? null : ended - firstTokenAt;
    message.phase = "finished";
    onUpdate();
  }
}

/**
 * The reasoning text of a stream's delta. The gateway sends it as `reasoning_content` (vLLM's older name,
 * which most clients read), as `reasoning` (vLLM's newer one) or as both, as configured; both carry the
 * same text, so one is read, never the two added up. Content never carries reasoning: a "[THINK]" in it is text.
 */
export function reasoningOf(delta) {
  for (const key of ["reasoning_content", "reasoning"]) {
    if (typeof delta[key] === "string" && delta[key]) return delta[key];
  }
  return "";
}

/** A plain object (it is saved with the conversation) describing what went wrong. */
export function describeError(error) {
  if (error instanceof ApiError) {
    return { message: error.message, status: error.status, type: error.type, code: error.code, param: error.param };
  }
  if (error instanceof TypeError) { // fetch() reports network failures as TypeError
    return { message: `Could not reach the server (${error.message})`, status: null, type: "network_error", code: null };
  }
  return { message: String(error?.message || error), status: null, type: "client_error", code: null };
}

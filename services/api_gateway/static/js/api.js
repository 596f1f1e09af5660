// The gateway's OpenAI API, same origin (relative URLs, so a path prefix in front of the gateway works).

import { readSse } from "./sse.js";

/** An API error in OpenAI's shape: `{error: {message, type, param, code}}` plus the HTTP status. */
export class ApiError extends Error {
  constructor(message, { status = null, type = null, code = null, param = null } = {}) {
    super(message);
    this.name = "ApiError";
    Object.assign(this, { status, type, code, param });
  }

  /** From an OpenAI error object (an HTTP error body's `error`, or an SSE error event's). */
  static fromBody(error, status = null) {
    return new ApiError(error?.message || "Unknown error", { status, type: error?.type, code: error?.code, param: error?.param });
  }
}

function headers(apiKey, json = false) {
  const result = {};
  if (json) result["Content-Type"] = "application/json";
  if (apiKey) result.Authorization = `Bearer ${apiKey}`;
  return result;
}

async function errorFromResponse(response) {
  const text = await response.text();
  try {
    return ApiError.fromBody(JSON.parse(text).error, response.status);
  } catch {
    return new ApiError(text.trim() || response.statusText || `HTTP ${response.status}`, { status: response.status });
  }
}

/** GET v1/models: `{models: [...text models...], defaultId}`. The vision model is not chat-able: left out. */
export async function listModels(apiKey) {
  const response = await fetch("v1/models", { headers: headers(apiKey) });
  if (!response.ok) throw await errorFromResponse(response);
  const body = await response.json();
  // The vision model is not chat-able, and an alias (`alias_of`) is another name of a model already listed.
  const models = body.data.filter((m) => m.role !== "vision-proxy" && !m.alias_of);
  const fallback = models.find((m) => m.default) || models[0];
  return { models, defaultId: body.default || fallback?.id };
}

/** GET v1/models/{id}: one model's entry (its `sampling_defaults` once it has loaded). */
export async function getModel(id, apiKey) {
  const response = await fetch(`v1/models/${encodeURIComponent(id)}`, { headers: headers(apiKey) });
  if (!response.ok) throw await errorFromResponse(response);
  return response.json();
}

/**
 * POST v1/chat/completions with `stream: true` and yield the stream's events: `{comment}` for SSE
 * comments, `{chunk}` for completion chunks. Throws `ApiError` for an HTTP error, and for an error event
 * inside the stream. Aborting `signal` closes the connection, which makes the gateway cancel the engine call.
 */
export async function* streamChat(body, { apiKey, signal }) {
  const response = await fetch("v1/chat/completions", {
    method: "POST", headers: headers(apiKey, true), signal,
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!response.ok) throw await errorFromResponse(response);
  for await (const { comment, data } of readSse(response.body)) {
    if (comment !== undefined) {
      yield { comment };
    } else if (data === "[DONE]") {
      return;
    } else {
      const chunk = JSON.parse(data);
      if (chunk.error) throw ApiError.fromBody(chunk.error);
      yield { chunk };
    }
  }
  throw new ApiError("The stream ended before [DONE]", { type: "stream_error" });
}

/**
 * The OpenAI `messages` for a conversation: an optional system prompt, user turns with their images, and
 * the assistant's answers. A turn that failed is left out, question and error both: otherwise a refused
 * request (say, an image with the vision model down) would fail every later one.
 *
 * Earlier answers go back without their reasoning, although the gateway would accept it
 * (`reasoning_content`): the usual practice for reasoning models (DeepSeek's API and Qwen3's model card
 * both ask for past turns without their thinking), and a long trace would take context, and the engine's
 * KV cache that all requests share, away from the turns that follow. The reasoning stays in the saved chat.
 *
 * `sentImages` (optional) gets, for each API message in order, the image objects it sent: an answer's
 * `proxy_vision` names images by API message and index, and the page puts each caption on its image.
 */
export function toApiMessages(messages, systemPrompt, sentImages = []) {
  const result = systemPrompt ? [{ role: "system", content: systemPrompt }] : [];
  if (systemPrompt) sentImages.push([]);
  for (const [index, message] of messages.entries()) {
    if (message.role === "user" && messages[index + 1]?.status === "error") continue;
    if (message.role === "user") {
      const images = message.images.filter((image) => image.url);
      sentImages.push(images);
      result.push({
        role: "user",
        content: images.length === 0 ? message.text : [
          { type: "text", text: message.text },
          ...images.map((image) => ({ type: "image_url", image_url: { url: image.url, detail: message.detail || "auto" } })),
        ],
      });
    } else if (message.role === "assistant" && message.content && message.status !== "error") {
      sentImages.push([]);
      result.push({ role: "assistant", content: message.content });
    }
  }
  return result;
}

// Server-sent events read from a fetch() body. EventSource cannot POST, and SDKs hide SSE comments; the
// gateway uses comments to say it is still working (": keep-alive") and where the time went (": timing").

/**
 * Yield `{comment}` for each comment line and `{data}` for each event's data (multi-line data joined
 * with "\n"), in stream order, from a `ReadableStream` of bytes.
 */
export async function* readSse(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (end === buffer.length - 1 && buffer[end] === "\r") break; // maybe the first half of "\r\n"
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (data.length) yield { data: data.join("\n") };
          data = [];
        } else if (line.startsWith(":")) {
          yield { comment: line.slice(1).trim() };
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        } // other fields (event:, id:, retry:) are not used by the OpenAI protocol
      }
    }
    if (data.length) yield { data: data.join("\n") };
  } finally {
    // Leaving early (the caller stopped reading) must close the connection: the gateway then cancels the
    // engine call. Cancelling a finished or aborted stream is harmless.
    reader.cancel().catch(() => {});
  }
}

/** `"fetch_ms=1.0 vision_ms=2.5"` -> `{fetch_ms: 1, vision_ms: 2.5}` (the gateway's timing comment). */
export function parseTiming(comment) {
  const timing = {};
  for (const [, key, value] of comment.matchAll(/(\w+)=([\d.]+)/g)) timing[key] = Number(value);
  return timing;
}

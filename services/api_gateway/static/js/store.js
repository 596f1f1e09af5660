// Conversations and settings, kept in this browser's localStorage (nothing is stored on the server).

const CHATS_KEY = "proxyvision.chats.v1";
const SETTINGS_KEY = "proxyvision.settings.v1";
// `sampling`: the user's own sampling values by API parameter (max_tokens, temperature); the rest are the
// selected model's defaults, applied by the server (sampling.js).
const DEFAULT_SETTINGS = { apiKey: "", systemPrompt: "", sampling: {} };
const OLD_MAX_TOKENS_DEFAULT = 1024;

function newId() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

function readJson(storage, key, fallback) {
  try {
    return JSON.parse(storage.getItem(key)) ?? fallback;
  } catch {
    return fallback; // unreadable (hand-edited, or from an incompatible version): start afresh
  }
}

/** The chats, newest first, and which one is open. Messages are plain objects (see completion.js). */
export class ChatStore {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    const saved = readJson(storage, CHATS_KEY, {});
    this.chats = Array.isArray(saved.chats) ? saved.chats : [];
    for (const chat of this.chats) {
      for (const message of chat.messages) {
        // An answer saved mid-stream (the page was closed) is as good as stopped.
        if (message.status === "streaming") Object.assign(message, { status: "stopped", phase: "finished" });
      }
    }
    this.currentId = this.chats.some((c) => c.id === saved.currentId) ? saved.currentId : null;
  }

  /** The open chat; an empty one is made when there is none. */
  current() {
    return this.chats.find((c) => c.id === this.currentId) || this.create();
  }

  create() {
    const chat = { id: newId(), title: "New chat", updated: Date.now(), messages: [] };
    this.chats.unshift(chat);
    this.currentId = chat.id;
    return chat;
  }

  select(id) {
    this.currentId = id;
  }

  remove(id) {
    this.chats = this.chats.filter((c) => c.id !== id);
    if (this.currentId === id) this.currentId = null;
  }

  clear() {
    this.chats = [];
    this.currentId = null;
  }

  /** Mark `chat` as changed: retitle it from its first message and move it to the top. */
  touch(chat) {
    const first = chat.messages.find((m) => m.role === "user");
    if (first) chat.title = first.text.trim().slice(0, 60) || `${first.images.length} image(s)`;
    chat.updated = Date.now();
    this.chats = [chat, ...this.chats.filter((c) => c !== chat)];
  }

  /**
   * Write everything. localStorage holds a few MiB; when that is full, the oldest images are dropped
   * (their messages keep the text and say so). Returns how many images were dropped.
   */
  save() {
    const data = () => JSON.stringify({ chats: this.chats.filter((c) => c.messages.length), currentId: this.currentId });
    let dropped = 0;
    for (;;) {
      try {
        this.storage.setItem(CHATS_KEY, data());
        return dropped;
      } catch (error) {
        if (error?.name !== "QuotaExceededError" || !this.dropOldestImage()) throw error;
        dropped += 1;
      }
    }
  }

  dropOldestImage() {
    for (const chat of [...this.chats].reverse()) {
      for (const message of chat.messages) {
        const image = message.images?.find((i) => i.url);
        if (image) {
          image.url = null; // kept as a placeholder: the view says the image was not kept
          return true;
        }
      }
    }
    return false;
  }
}

/** Settings as saved, with defaults for what is missing. */
export function loadSettings(storage = window.localStorage) {
  const { maxTokens, temperature, ...saved } = readJson(storage, SETTINGS_KEY, {});
  const own = saved.sampling && typeof saved.sampling === "object" ? saved.sampling : {};
  const settings = { ...DEFAULT_SETTINGS, ...saved, sampling: { ...own } };
  // Saved before `sampling`: `maxTokens` (saved as 1024 whether or not the user chose it, so 1024 is dropped
  // and the model's own default applies) and `temperature` (null: the model's).
  if (typeof maxTokens === "number" && maxTokens !== OLD_MAX_TOKENS_DEFAULT) settings.sampling.max_tokens ??= maxTokens;
  if (typeof temperature === "number") settings.sampling.temperature ??= temperature;
  return settings;
}

export function saveSettings(settings, storage = window.localStorage) {
  storage.setItem(SETTINGS_KEY, JSON.stringify(settings));
}

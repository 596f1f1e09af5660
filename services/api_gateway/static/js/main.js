// The page's controller: wires the DOM to the store, the attachments and the streamed completions.
// One answer streams at a time; its AbortController is the Stop button.

import { getModel, listModels, toApiMessages } from "./api.js";
import { Attachments, isImageUrl } from "./attachments.js";
import { newAssistantMessage, runCompletion } from "./completion.js";
import { SamplingFields } from "./sampling.js";
import { ChatStore, loadSettings, saveSettings } from "./store.js";
import { messageElement, renderChatList, updateAssistant } from "./view.js";

const $ = (id) => document.getElementById(id);
const ui = {
  app: document.querySelector(".app"), sidebar: $("sidebar"), scrim: $("scrim"), toggleSidebar: $("toggle-sidebar"),
  chatList: $("chat-list"), newChat: $("new-chat"), clearChats: $("clear-chats"), model: $("model"),
  messages: $("messages"), empty: $("empty"), composer: $("composer"), prompt: $("prompt"), send: $("send"),
  stop: $("stop"), fileInput: $("file-input"), attach: $("attach"), attachUrl: $("attach-url"), urlRow: $("url-row"),
  imageUrl: $("image-url"), addUrl: $("add-url"), cancelUrl: $("cancel-url"), detail: $("detail"),
  detailField: $("detail-field"), notice: $("notice"), dropOverlay: $("drop-overlay"),
  settings: $("settings"), openSettings: $("open-settings"), apiKey: $("api-key"), systemPrompt: $("system-prompt"),
  samplingReset: $("sampling-reset"), apiKeyProblem: $("api-key-problem"),
};

const store = new ChatStore();
const settings = loadSettings();
const sampling = new SamplingFields(ui.settings);
let models = new Map(); // the chat models of /v1/models, by id
const attachments = new Attachments($("attachments"), (count) => { ui.detailField.hidden = count === 0; }, ui.prompt);
let active = null; // the answer being streamed: {controller, chat, message, article}

function notify(text) {
  ui.notice.textContent = text;
}

function persist() {
  try {
    const dropped = store.save();
    if (dropped) notify(`Browser storage is full: ${dropped} older image(s) were dropped from the saved history.`);
  } catch (error) {
    notify(`Could not save the conversation in this browser: ${error.message}`);
  }
}

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToEnd(force = false) {
  if (force || nearBottom()) ui.messages.scrollTop = ui.messages.scrollHeight;
}

/** Render the open chat and the chat list from the store. */
function showChat() {
  const chat = store.current();
  const last = chat.messages.length - 1;
  const elements = chat.messages.map((message, index) => {
    const element = messageElement(message, index === last && !active);
    if (active && message === active.message) active.article = element;
    return element;
  });
  ui.messages.replaceChildren(ui.empty, ...elements);
  ui.empty.hidden = chat.messages.length > 0;
  renderChatList(ui.chatList, store.chats, store.currentId, { select: selectChat, remove: removeChat });
  scrollToEnd(true);
}

/** Open or close the drawer (phone width). Keyboard focus goes into it, and back to its button. */
function setSidebar(open) {
  const wasOpen = ui.app.classList.contains("sidebar-open");
  ui.app.classList.toggle("sidebar-open", open);
  ui.scrim.hidden = !open;
  ui.toggleSidebar.setAttribute("aria-expanded", String(open));
  if (open && !wasOpen) ui.newChat.focus();
  else if (!open && wasOpen && ui.sidebar.contains(document.activeElement)) ui.toggleSidebar.focus();
}

function selectChat(id) {
  store.select(id);
  persist();
  setSidebar(false);
  showChat();
  ui.prompt.focus();
}

function removeChat(id) {
  if (active?.chat.id === id) active.controller.abort();
  store.remove(id);
  persist();
  showChat();
}

function newChat() {
  if (store.current().messages.length) store.create();
  setSidebar(false);
  showChat();
  ui.prompt.focus();
}

/** A 401: say why in plain words, and open Settings at the key field (the key is kept in this browser). */
function askForKey(error) {
  const text = settings.apiKey
    ? "The API key was not accepted (401). Check the key in Settings."
    : "This server needs an API key (401). Enter it in Settings.";
  notify(text);
  ui.apiKeyProblem.textContent = `${text} The server said: ${error.message}`;
  ui.apiKeyProblem.hidden = false;
  if (!ui.settings.open) openSettings();
  ui.apiKey.focus();
}

/** The settings dialog, its sampling fields showing the selected model's defaults (and the user's own values). */
function openSettings() {
  ui.apiKey.value = settings.apiKey;
  ui.systemPrompt.value = settings.systemPrompt;
  const id = ui.model.value;
  sampling.show(models.get(id), settings.sampling);
  ui.settings.showModal();
  if (!id) return; // no models listed (yet)
  // The list may predate the model's load (no defaults yet), or its reload: ask again, and show the answer.
  getModel(id, settings.apiKey).then((model) => {
    models.set(id, model);
    if (ui.settings.open) sampling.refresh(model);
  }, () => {}); // no answer: the fields keep what the list said
}

async function loadModels() {
  try {
    const listing = await listModels(settings.apiKey);
    models = new Map(listing.models.map((m) => [m.id, m]));
    ui.model.replaceChildren(...listing.models.map((m) => {
      const flags = [m.stand_in_for && "tiny stand-in", m.state === "unreachable" && "unreachable"].filter(Boolean);
      const option = new Option(flags.length ? `${m.id} (${flags.join(", ")})` : m.id, m.id);
      option.title = m.note || m.description || "";
      return option;
    }));
    ui.model.value = listing.defaultId;
    ui.apiKeyProblem.hidden = true;
  } catch (error) {
    ui.model.replaceChildren(new Option("(no models)", ""));
    if (error.status === 401) askForKey(error);
    else notify(`Could not list the models: ${error.message}`);
  }
}

function requestBody(chat, sentImages) {
  // Only the user's own sampling values: the engine applies the model's defaults to the rest (sampling.js).
  const messages = toApiMessages(chat.messages, settings.systemPrompt, sentImages);
  return { model: ui.model.value, messages, ...settings.sampling };
}

function setStreaming(streaming) {
  ui.send.hidden = streaming;
  ui.stop.hidden = !streaming;
  if (!streaming && document.activeElement === ui.stop) ui.prompt.focus();
}

/** Put each caption of an answer's `proxy_vision` on the image it describes (saved with the chat, shown under it). */
function showCaptions(sentImages, proxyVision) {
  for (const { message, index, caption, cached } of proxyVision.images || []) {
    const image = sentImages[message]?.[index];
    if (image && typeof caption === "string") Object.assign(image, { caption, captionCached: Boolean(cached) });
  }
  showChat();
}

/** Ask for the next answer of `chat` (its last message is the user's) and stream it in. */
async function answer(chat) {
  const sentImages = []; // per API message, the images it sent (where the answer's captions go)
  const body = requestBody(chat, sentImages);
  const imageCount = body.messages.flatMap((m) => (Array.isArray(m.content) ? m.content : []))
    .filter((part) => part.type === "image_url").length;
  // A model that looks at images itself (vision_mode native) has no captions to wait for.
  const native = models.get(body.model)?.capabilities?.vision_mode === "native";
  const message = newAssistantMessage(body.model, imageCount, native);
  chat.messages.push(message);
  active = { controller: new AbortController(), chat, message, article: null };
  store.touch(chat);
  persist();
  showChat();
  setStreaming(true);
  let frame = 0;
  const onUpdate = () => { // at most one render per animation frame, however fast tokens come
    frame ||= requestAnimationFrame(() => {
      frame = 0;
      if (active?.article?.isConnected) {
        updateAssistant(active.article, message);
        scrollToEnd();
      }
    });
  };
  const onCaptions = (proxyVision) => showCaptions(sentImages, proxyVision);
  await runCompletion(message, body, { apiKey: settings.apiKey, signal: active.controller.signal, onUpdate, onCaptions });
  if (message.error?.status === 401) askForKey(message.error);
  cancelAnimationFrame(frame);
  const { article } = active;
  active = null;
  setStreaming(false);
  if (article?.isConnected) {
    updateAssistant(article, message, chat.messages.at(-1) === message);
    scrollToEnd();
  }
  persist();
}

let sending = false; // between Enter and the request: images still being read are awaited

async function send() {
  if (active || sending) return;
  const text = ui.prompt.value.trim();
  if (!text && attachments.count === 0) return;
  notify("");
  sending = true;
  ui.prompt.value = "";
  autosize();
  const chat = store.current();
  try {
    chat.messages.push({ role: "user", text, images: await attachments.take(), detail: ui.detail.value });
  } finally {
    sending = false;
  }
  answer(chat);
}

function retry() {
  const chat = store.current();
  if (active || chat.messages.at(-1)?.status !== "error") return;
  chat.messages.pop();
  answer(chat);
}

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 220)}px`;
}

async function attachFiles(files) {
  const rejected = await attachments.addFiles(files);
  if (rejected.length) notify(`Not an image, not attached: ${rejected.join(", ")}`);
}

function addUrlFromInput() {
  const url = ui.imageUrl.value.trim();
  if (!isImageUrl(url)) {
    notify("An image URL starts with http://, https:// or data:image/");
    ui.imageUrl.focus();
    return;
  }
  attachments.addUrl(url);
  ui.imageUrl.value = "";
  ui.urlRow.hidden = true;
  notify("");
  ui.prompt.focus();
}

function draggingSomethingUseful(event) {
  const types = [...(event.dataTransfer?.types || [])];
  return types.includes("Files") || types.includes("text/uri-list");
}

function wireComposer() {
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    } else if (event.key === "Escape" && active) {
      active.controller.abort();
    }
  });
  ui.prompt.addEventListener("input", autosize);
  ui.stop.addEventListener("click", () => active?.controller.abort());
  ui.attach.addEventListener("click", () => ui.fileInput.click());
  ui.fileInput.addEventListener("change", async () => {
    await attachFiles([...ui.fileInput.files]);
    ui.fileInput.value = ""; // choosing the same file again must fire "change" again
  });
  ui.attachUrl.addEventListener("click", () => {
    ui.urlRow.hidden = false;
    ui.imageUrl.focus();
  });
  ui.addUrl.addEventListener("click", addUrlFromInput);
  ui.cancelUrl.addEventListener("click", () => {
    ui.urlRow.hidden = true;
    ui.attachUrl.focus();
  });
  ui.imageUrl.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addUrlFromInput();
    } else if (event.key === "Escape") {
      ui.cancelUrl.click();
    }
  });
  ui.messages.addEventListener("click", (event) => {
    if (event.target.closest("[data-action=retry]")) retry();
  });
}

function wireDropAndPaste() {
  let depth = 0; // dragenter/dragleave fire for every child crossed: count them
  document.addEventListener("dragenter", (event) => {
    if (!draggingSomethingUseful(event)) return;
    depth += 1;
    ui.dropOverlay.hidden = false;
  });
  document.addEventListener("dragleave", (event) => {
    if (!draggingSomethingUseful(event)) return;
    depth = Math.max(0, depth - 1);
    ui.dropOverlay.hidden = depth > 0;
  });
  document.addEventListener("dragover", (event) => {
    if (!draggingSomethingUseful(event)) return;
    event.preventDefault(); // allows the drop
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", async (event) => {
    if (!draggingSomethingUseful(event)) return;
    event.preventDefault(); // the browser would otherwise open the file and leave the page
    depth = 0;
    ui.dropOverlay.hidden = true;
    const files = [...event.dataTransfer.files];
    if (files.length) {
      await attachFiles(files);
      return;
    }
    const url = (event.dataTransfer.getData("text/uri-list") || "").split(/\r?\n/).find((line) => line && !line.startsWith("#"));
    if (url && isImageUrl(url)) attachments.addUrl(url);
  });
  document.addEventListener("paste", async (event) => {
    const files = [...(event.clipboardData?.files || [])].filter((file) => file.type.startsWith("image/"));
    if (!files.length) return; // text pastes as usual
    event.preventDefault();
    await attachFiles(files);
  });
}

function wireChrome() {
  ui.newChat.addEventListener("click", newChat);
  ui.clearChats.addEventListener("click", () => {
    if (!confirm("Delete all chats stored in this browser?")) return;
    active?.controller.abort();
    store.clear();
    persist();
    showChat();
  });
  ui.toggleSidebar.addEventListener("click", () => setSidebar(!ui.app.classList.contains("sidebar-open")));
  ui.scrim.addEventListener("click", () => setSidebar(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && ui.app.classList.contains("sidebar-open")) setSidebar(false);
  });
  ui.openSettings.addEventListener("click", openSettings);
  ui.samplingReset.addEventListener("click", () => sampling.reset());
  ui.settings.addEventListener("close", () => {
    const keyChanged = ui.apiKey.value !== settings.apiKey;
    Object.assign(settings, {
      apiKey: ui.apiKey.value, systemPrompt: ui.systemPrompt.value.trim(),
      sampling: sampling.values(),
    });
    saveSettings(settings);
    if (keyChanged) loadModels();
  });
}

wireComposer();
wireDropAndPaste();
wireChrome();
showChat();
loadModels().then(() => document.body.setAttribute("data-ready", "true"));

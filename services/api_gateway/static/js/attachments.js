// Images waiting to be sent with the next message: from the file picker, drag and drop, paste, or a URL.

// The vision model sees at most about 1000x1000 pixels (detail "high"); a larger photo is scaled down to
// this before it is sent, which keeps uploads small and conversations within localStorage's few MiB.
const MAX_SIDE = 1536;
const MAX_BYTES = 1_500_000;

function readAsDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/** A data URL for `file`, scaled down (JPEG) when it is larger than the vision model can use. */
async function imageDataUrl(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return readAsDataUrl(file); // the browser cannot decode it; the server will say whether it can
  }
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size <= MAX_BYTES) {
    bitmap.close();
    return readAsDataUrl(file);
  }
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff"; // transparency over white, as the vision engine would do
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return canvas.toDataURL("image/jpeg", 0.9);
}

/** True for what the gateway accepts as an image URL: http(s) or a data:image URL. */
export function isImageUrl(text) {
  if (/^data:image\/[\w.+-]+;base64,/i.test(text)) return true;
  try {
    return ["http:", "https:"].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}

/**
 * The pending images and their thumbnails (each with a remove button) in `container`. Reading (and
 * scaling) a file takes a moment: its thumbnail shows a spinner meanwhile, and `take()` waits for it, so
 * a message sent right after a drop still carries the image.
 */
export class Attachments {
  constructor(container, onChange, focusWhenEmpty) {
    this.container = container;
    this.onChange = onChange;
    this.focusWhenEmpty = focusWhenEmpty;
    this.items = []; // {url, name}; url is null while the file is being read
    this.reading = new Set(); // promises of files still being read
  }

  /** Add the image files among `files`; resolves, once they are read, to the names of those refused. */
  async addFiles(files) {
    const rejected = [];
    const jobs = [];
    for (const file of files) {
      if (!file.type.startsWith("image/")) {
        rejected.push(file.name || "a file");
        continue;
      }
      const item = { url: null, name: file.name || "pasted image" };
      this.items.push(item);
      jobs.push(imageDataUrl(file).then((url) => { item.url = url; }, (error) => {
        this.items = this.items.filter((other) => other !== item);
        rejected.push(`${item.name} (${error?.message || "unreadable"})`);
      }));
    }
    this.render();
    const all = Promise.all(jobs);
    this.reading.add(all);
    await all;
    this.reading.delete(all);
    this.render();
    return rejected;
  }

  get count() {
    return this.items.length;
  }

  /** Hand the images over (to the message being sent), once all are read, and empty the list. */
  async take() {
    while (this.reading.size) await Promise.all([...this.reading]);
    const items = this.items;
    this.items = [];
    this.render();
    return items;
  }

  addUrl(url) {
    this.items.push({ url, name: url.startsWith("data:") ? "image" : url.split(/[?#]/)[0].split("/").pop() || url });
    this.render();
  }

  remove(index) {
    this.items.splice(index, 1);
    this.render();
    // The focused button is gone: keep keyboard users in the list, or send them back to the message box.
    const buttons = this.container.querySelectorAll(".thumb-remove");
    (buttons[Math.min(index, buttons.length - 1)] || this.focusWhenEmpty).focus();
  }

  render() {
    this.container.replaceChildren(...this.items.map((item, index) => {
      const figure = document.createElement("figure");
      figure.className = "thumb";
      let preview;
      if (item.url) {
        preview = document.createElement("img");
        preview.src = item.url;
        preview.alt = item.name;
        preview.referrerPolicy = "no-referrer";
      } else {
        preview = document.createElement("span");
        preview.className = "thumb-reading";
        preview.append(Object.assign(document.createElement("span"), { className: "spinner" }));
        preview.setAttribute("aria-label", `Reading ${item.name}`);
      }
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "thumb-remove";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove ${item.name}`);
      remove.addEventListener("click", () => this.remove(index));
      const caption = document.createElement("figcaption");
      caption.textContent = item.name;
      figure.append(preview, remove, caption);
      return figure;
    }));
    this.onChange(this.items.length);
  }
}

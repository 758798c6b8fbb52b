// The page: one photo, a batch or a video clip, against the JSON API of the same service.
import { ApiError, call, cartoonize } from "./api.js";
import * as store from "./store.js";
import { setUpLive } from "./live.js";
import { setUpVideo } from "./video.js";
import { zip } from "./zip.js";

const IN_FLIGHT = 3; // requests at once: enough for the service to batch them, few enough to share
const IMAGE_NAME = /\.(jpe?g|png|webp|bmp|tiff?|gif)$/i;
const EXTENSIONS = { png: "png", jpeg: "jpg", webp: "webp" };

const $ = (id) => document.getElementById(id);
const status = $("status");

function announce(message) {
  status.textContent = message;
}

function messageOf(error) {
  return error instanceof ApiError ? error.message : String(error.message || error);
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(2)} s`;
}

function facesText(count) {
  return count === 1 ? "1 face" : `${count} faces`;
}

function outputName(path, format) {
  const slash = path.lastIndexOf("/");
  const dot = path.lastIndexOf(".");
  const stem = dot > slash ? path.slice(0, dot) : path;
  return `${stem}.${EXTENSIONS[format]}`;
}

// ---- settings -------------------------------------------------------------

function options() {
  const style = document.querySelector('input[name="style"]:checked');
  return {
    style: style ? style.value : null,
    strength: Number($("strength").value),
    format: $("format").value,
    maxSide: Number($("size").value) || null,
  };
}

$("strength").addEventListener("input", () => {
  $("strength-value").textContent = Number($("strength").value).toFixed(2);
});

async function loadStyles() {
  try {
    const response = await call("v1/styles");
    const { default: chosen, styles } = await response.json();
    const container = $("style-options");
    for (const style of styles) {
      const label = document.createElement("label");
      label.className = "style-option";
      label.innerHTML = '<input type="radio" name="style"><span class="preview" aria-hidden="true"></span>'
        + '<span class="style-name"></span><span class="style-description"></span>';
      const input = label.querySelector("input");
      input.value = style.name;
      input.checked = style.name === chosen;
      label.querySelector(".style-name").textContent = style.name;
      label.querySelector(".style-description").textContent = style.description;
      container.append(label);
    }
    $("styles-hint").textContent = "Pick a photo to see it in every style.";
  } catch (error) {
    $("styles-hint").textContent = `The styles could not be loaded: ${messageOf(error)}`;
  }
}

let previewRun = 0;

/** Shows the photo in every style, small, one request after the other. */
async function previewStyles(file) {
  const run = ++previewRun;
  for (const label of document.querySelectorAll(".style-option")) {
    const name = label.querySelector("input").value;
    const box = label.querySelector(".preview");
    box.replaceChildren();
    box.classList.add("loading");
    try {
      const result = await cartoonize(file, { ...options(), style: name, format: "jpeg", maxSide: 160 });
      if (run !== previewRun) return;
      const image = document.createElement("img");
      image.src = URL.createObjectURL(result.blob);
      image.alt = "";
      box.append(image);
    } catch {
      if (run !== previewRun) return;
    } finally {
      box.classList.remove("loading");
    }
  }
}

// ---- tabs -----------------------------------------------------------------

const tabs = [...document.querySelectorAll('[role="tab"]')];

function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
}

for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) selectTab(tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length]);
    if (event.key === "Home") selectTab(tabs[0]);
    if (event.key === "End") selectTab(tabs[tabs.length - 1]);
  });
}

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    onFiles(await droppedFiles(event.dataTransfer));
  });
}

/** Files of a drop, folders walked: [{file, path}]. */
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...transfer.files].map((file) => ({ file, path: file.name }));
  const found = [];
  async function walk(entry) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      found.push({ file, path: entry.fullPath.replace(/^\//, "") });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return found;
}

// ---- one photo ------------------------------------------------------------

let singleFile = null;
const urls = { before: null, after: null };

function setUrl(kind, blob) {
  if (urls[kind]) URL.revokeObjectURL(urls[kind]);
  urls[kind] = URL.createObjectURL(blob);
  return urls[kind];
}

function pickSingle(file) {
  if (!file) return;
  singleFile = file;
  $("single-preview").src = setUrl("before", file);
  $("single-photo").hidden = false;
  $("single-result").hidden = true;
  $("single-run").disabled = false;
  announce(`Photo chosen: ${file.name || "pasted image"}. Press Cartoonize.`);
  previewStyles(file);
}

$("single-file").addEventListener("change", (event) => pickSingle(event.target.files[0]));
dropZone($("single-drop"), (found) => pickSingle(found.map((entry) => entry.file)[0]));
document.addEventListener("paste", (event) => {
  const file = [...event.clipboardData.files].find((candidate) => candidate.type.startsWith("image/"));
  if (!file) return;
  selectTab($("tab-single"));
  pickSingle(file);
});

$("single-run").addEventListener("click", async () => {
  const file = singleFile;
  const chosen = options();
  const button = $("single-run");
  button.disabled = true;
  $("single-progress").hidden = false;
  announce("Cartoonizing…");
  try {
    const result = await cartoonize(file, chosen, undefined, (wait) =>
      announce(`The service is busy; trying again in ${wait.toFixed(0)} s…`));
    $("before").src = urls.before;
    $("after").src = setUrl("after", result.blob);
    const download = $("single-download");
    download.href = urls.after;
    download.download = outputName(file.name || "pasted.png", chosen.format);
    const server = result.serverMs === null ? "" : ` (service ${seconds(result.serverMs)})`;
    $("single-info").textContent = `${facesText(result.faces)} found · ${seconds(result.ms)}${server}`;
    $("single-photo").hidden = true;
    $("single-result").hidden = false;
    announce(`Done: ${facesText(result.faces)} found in ${seconds(result.ms)}.`);
  } catch (error) {
    $("single-info").textContent = "";
    announce(`Failed: ${messageOf(error)}`);
  } finally {
    button.disabled = false;
    $("single-progress").hidden = true;
  }
});

$("compare-position").addEventListener("input", (event) => {
  $("compare").style.setProperty("--position", `${event.target.value}%`);
});

// ---- batch ----------------------------------------------------------------

const items = new Map(); // id -> item (as stored)
const rows = new Map(); // id -> <li>
const controllers = new Map(); // id -> AbortController of a running item
let order = 0;
let running = 0;

const LABELS = {
  queued: "Queued", running: "Running", waiting: "Waiting", done: "Done", failed: "Failed", cancelled: "Cancelled",
};

function render(item) {
  let row = rows.get(item.id);
  if (!row) {
    row = document.createElement("li");
    row.innerHTML = '<span class="thumb" aria-hidden="true"></span><span class="name"></span>'
      + '<span class="state"></span><span class="detail"></span><span class="link"></span>';
    row.querySelector(".name").textContent = item.path;
    rows.set(item.id, row);
    $("batch-list").append(row);
  }
  row.dataset.status = item.status;
  row.querySelector(".state").textContent = LABELS[item.status];
  row.querySelector(".detail").textContent = item.message || "";
  if (item.status === "done" && !row.querySelector("a")) {
    const url = URL.createObjectURL(item.output);
    const image = document.createElement("img");
    image.src = url;
    image.alt = "";
    image.loading = "lazy";
    row.querySelector(".thumb").replaceChildren(image);
    const link = document.createElement("a");
    link.href = url;
    link.download = item.outputName.split("/").pop();
    link.textContent = "Download";
    link.setAttribute("aria-label", `Download ${item.outputName}`);
    row.querySelector(".link").replaceChildren(link);
  } else if (item.status !== "done") {
    row.querySelector(".thumb").replaceChildren();
    row.querySelector(".link").replaceChildren();
  }
}

function summarize() {
  const counts = { queued: 0, running: 0, waiting: 0, done: 0, failed: 0, cancelled: 0 };
  for (const item of items.values()) counts[item.status]++;
  const total = items.size;
  const finished = counts.done + counts.failed + counts.cancelled;
  const progress = $("batch-progress");
  progress.max = Math.max(total, 1);
  progress.value = finished;
  const active = counts.queued + counts.running + counts.waiting;
  $("batch-count").textContent = total
    ? `${finished} of ${total} finished: ${counts.done} done, ${counts.failed} failed`
      + (counts.cancelled ? `, ${counts.cancelled} cancelled` : "") + (active ? `, ${active} to go` : "")
    : "No photos yet.";
  $("batch-cancel").disabled = active === 0;
  $("batch-retry").disabled = counts.failed + counts.cancelled === 0 || active > 0;
  $("batch-zip").disabled = counts.done === 0;
  $("batch-clear").disabled = total === 0;
  return { counts, active };
}

async function update(item, changes) {
  Object.assign(item, changes);
  if (!items.has(item.id)) return; // cleared meanwhile
  render(item);
  summarize();
  await store.save(item);
}

async function process(item) {
  const controller = new AbortController();
  controllers.set(item.id, controller);
  const chosen = options();
  await update(item, { status: "running", message: "" });
  try {
    const result = await cartoonize(item.input, chosen, controller.signal, (wait) =>
      update(item, { status: "waiting", message: `service busy; retrying in ${wait.toFixed(0)} s` }));
    await update(item, {
      status: "done",
      input: null,
      output: result.blob,
      outputName: outputName(item.path, chosen.format),
      message: `${facesText(result.faces)} · ${seconds(result.ms)}`,
    });
  } catch (error) {
    if (controller.signal.aborted) await update(item, { status: "cancelled", message: "" });
    else await update(item, { status: "failed", message: messageOf(error) });
  } finally {
    controllers.delete(item.id);
  }
}

function pump() {
  for (const item of items.values()) {
    if (running >= IN_FLIGHT) return;
    if (item.status !== "queued" || controllers.has(item.id)) continue;
    running++;
    process(item).finally(() => {
      running--;
      pump();
      const { counts, active } = summarize();
      if (running === 0 && active === 0 && items.size) {
        announce(`Batch finished: ${counts.done} done, ${counts.failed} failed`
          + (counts.cancelled ? `, ${counts.cancelled} cancelled.` : "."));
      }
    });
  }
}

async function addFiles(found) {
  const images = found.filter(({ file }) => IMAGE_NAME.test(file.name));
  const ignored = found.length - images.length;
  for (const { file, path } of images) {
    const item = { id: `${Date.now()}-${order}`, order: order++, path, input: file, status: "queued", message: "" };
    items.set(item.id, item);
    render(item);
    await store.save(item);
  }
  summarize();
  announce(`${images.length} photos added to the batch`
    + (ignored ? `; ${ignored} files ignored (not images by their name)` : "") + ".");
  pump();
}

function pickedFiles(input) {
  return [...input.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
}

$("batch-files").addEventListener("change", (event) => {
  addFiles(pickedFiles(event.target));
  event.target.value = "";
});
$("batch-folder").addEventListener("change", (event) => {
  addFiles(pickedFiles(event.target));
  event.target.value = "";
});
dropZone($("batch-drop"), addFiles);

$("batch-cancel").addEventListener("click", async () => {
  for (const item of items.values()) {
    if (item.status === "queued") await update(item, { status: "cancelled", message: "" });
  }
  for (const controller of controllers.values()) controller.abort();
  announce("Batch cancelled.");
});

$("batch-retry").addEventListener("click", async () => {
  for (const item of items.values()) {
    if (["failed", "cancelled"].includes(item.status)) await update(item, { status: "queued", message: "" });
  }
  announce("Retrying the failed photos.");
  pump();
});

$("batch-zip").addEventListener("click", async () => {
  const button = $("batch-zip");
  button.disabled = true;
  announce("Packing the ZIP…");
  try {
    const used = new Set();
    const files = [];
    for (const item of items.values()) {
      if (item.status !== "done") continue;
      let name = item.outputName;
      for (let copy = 2; used.has(name); copy++) name = item.outputName.replace(/(\.\w+)$/, ` (${copy})$1`);
      used.add(name);
      files.push({ name, blob: item.output });
    }
    const archive = await zip(files);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(archive);
    link.download = "cartoons.zip";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    announce(`ZIP ready: ${files.length} cartoons.`);
  } catch (error) {
    announce(`The ZIP could not be made: ${messageOf(error)}`);
  } finally {
    summarize();
  }
});

$("batch-clear").addEventListener("click", async () => {
  for (const controller of controllers.values()) controller.abort();
  items.clear();
  rows.clear();
  $("batch-list").replaceChildren();
  await store.clearAll();
  summarize();
  announce("The list is cleared.");
});

/** Puts back the batch of the last visit; what was under way then starts again. */
async function restore() {
  for (const item of await store.loadAll()) {
    if (["running", "waiting"].includes(item.status)) item.status = "queued";
    items.set(item.id, item);
    order = Math.max(order, item.order + 1);
    render(item);
  }
  summarize();
  if (items.size) announce(`${items.size} photos from the last visit are in the batch list.`);
  pump();
}

loadStyles();
restore();
setUpVideo({ announce, messageOf, options, dropZone, showTab: () => selectTab($("tab-video")) });
setUpLive({ announce, options });

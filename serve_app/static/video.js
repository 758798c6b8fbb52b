// The video tab: the clip goes to the service's jobs API; the page follows the job's
// progress, can cancel it, and plays the cartoon beside the clip. The job being
// followed is kept in sessionStorage, so a reload follows it again.
import { ApiError, cancelJob, jobResult, jobStatus, submitJob } from "./api.js";

const TYPE_BY_SUFFIX = { mp4: "video/mp4", mov: "video/quicktime", webm: "video/webm", mkv: "video/x-matroska" };
const SUFFIX_BY_TYPE = Object.fromEntries(Object.entries(TYPE_BY_SUFFIX).map(([suffix, type]) => [type, suffix]));
const POLL_MS = 700;
const JOB_STORAGE = "cartoon.videoJob";
const FINISHED = new Set(["done", "failed", "cancelled", "lost"]);

const $ = (id) => document.getElementById(id);

function suffixOf(name) {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? "" : name.slice(dot + 1).toLowerCase();
}

function stemOf(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

/** The clip's media type, by its name first: browsers leave .mkv and .mov untyped on some systems. */
function clipType(file) {
  return TYPE_BY_SUFFIX[suffixOf(file.name)] || (file.type.startsWith("video/") ? file.type : null);
}

function duration(seconds) {
  const whole = Math.round(seconds);
  return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min ${whole % 60} s`;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

/**
 * Wires the video tab.
 * @param {{announce: (message: string) => void, messageOf: (error: unknown) => string,
 *          options: () => {style: string, strength: number, maxSide: number|null},
 *          dropZone: (zone: Element, onFiles: (found: {file: File}[]) => void) => void,
 *          showTab: () => void}} page
 */
export function setUpVideo({ announce, messageOf, options, dropZone, showTab }) {
  const before = $("video-before");
  const after = $("video-after");
  const progress = $("video-progress");
  const urls = { before: null, after: null };
  let clip = null; // the File chosen
  let job = null; // {id, name} of the job followed
  let following = null; // AbortController of the upload or of the polling

  function setUrl(kind, blob) {
    if (urls[kind]) URL.revokeObjectURL(urls[kind]);
    urls[kind] = blob ? URL.createObjectURL(blob) : null;
    return urls[kind] || "";
  }

  function setBusy(busy) {
    $("video-run").disabled = busy || !clip;
    $("video-cancel").disabled = !busy;
    $("video-file").disabled = busy;
  }

  function showProgress(text, done, total) {
    $("video-job").hidden = false;
    $("video-progress-text").textContent = text;
    if (total) {
      progress.max = total;
      progress.value = done;
    } else {
      progress.removeAttribute("value"); // indeterminate until the frames are counted
    }
  }

  function showJob(described) {
    const { frames_done: done = 0, frames_total: total = 0, fps, eta_s: eta } = described.progress || {};
    if (described.state === "queued") {
      showProgress("Queued: the service starts it as soon as it can…", 0, 0);
    } else if (described.state === "running") {
      const parts = [total ? `${done} of ${total} frames` : `${done} frames`];
      if (fps) parts.push(`${fps.toFixed(1)} frames/s`);
      if (eta !== null && eta !== undefined) parts.push(`about ${duration(eta)} left`);
      showProgress(parts.join(" · "), done, total);
    } else if (described.state === "done") {
      showProgress(`Done: ${done} frames`, 1, 1); // the total was the container's estimate
    } else {
      showProgress(`${described.state[0].toUpperCase()}${described.state.slice(1)} after ${done} of ${total} frames`,
        done, total);
    }
  }

  function forget() {
    job = null;
    following = null;
    sessionStorage.removeItem(JOB_STORAGE);
    setBusy(false);
  }

  async function finish(described, signal) {
    const name = job.name;
    if (described.state === "done") {
      const result = await jobResult(job.id, signal);
      after.src = setUrl("after", result);
      const download = $("video-download");
      download.href = urls.after;
      download.download = `${stemOf(name)}.${SUFFIX_BY_TYPE[result.type] || job.format}`;
      $("video-pair").hidden = false;
      $("video-after-figure").hidden = false;
      $("video-done").hidden = false;
      announce(`Done: ${name} is cartoonized (${described.progress.frames_done} frames).`);
    } else if (described.state === "failed") {
      announce(`Failed: ${described.error ? described.error.message : "the service gave no reason"}`);
    } else if (described.state === "lost") {
      announce("The service lost this job (it may have restarted). Start it again.");
    } else {
      announce(`Cancelled: ${name}.`);
    }
  }

  /** Polls the job until it is finished, showing its progress; cancel() stops it through its signal. */
  async function follow(described) {
    const { signal } = following;
    let announced = described.state;
    try {
      while (!FINISHED.has(described.state)) {
        showJob(described);
        await sleep(POLL_MS, signal);
        described = await jobStatus(job.id, signal, (wait) =>
          announce(`The service is busy; asking again in ${wait.toFixed(0)} s…`));
        if (described.state === "running" && announced !== "running") announce(`Cartoonizing ${job.name}…`);
        announced = described.state;
      }
      showJob(described);
      await finish(described, signal);
      forget();
    } catch (error) {
      if (signal.aborted) return; // cancel() takes over
      announce(error instanceof ApiError && error.status === 404
        ? "The service no longer knows this job. Start it again."
        : `Failed: ${messageOf(error)}`);
      forget();
    }
  }

  function pick(file) {
    if (!file) return;
    if (following) {
      announce(`${job ? job.name : "A clip"} is being cartoonized: wait for it or cancel it first.`);
      return;
    }
    const type = clipType(file);
    if (!type) {
      announce(`${file.name} is not a video clip: choose an MP4, MOV, WebM or MKV file.`);
      return;
    }
    clip = file;
    before.src = setUrl("before", file);
    after.removeAttribute("src");
    setUrl("after", null);
    $("video-pair").hidden = false;
    $("video-before-figure").hidden = false;
    $("video-after-figure").hidden = true;
    $("video-done").hidden = true;
    $("video-job").hidden = true;
    setBusy(false);
    announce(`Clip chosen: ${file.name}. Press Cartoonize the clip.`);
  }

  async function run() {
    const file = clip;
    following = new AbortController();
    setBusy(true);
    $("video-after-figure").hidden = true;
    $("video-done").hidden = true;
    showProgress(`Sending ${file.name}…`, 0, 0);
    announce(`Sending ${file.name}…`);
    const chosen = { ...options(), format: $("video-format").value };
    let described;
    try {
      described = await submitJob(file, clipType(file), chosen, following.signal, (wait) =>
        announce(`The service is busy; trying again in ${wait.toFixed(0)} s…`));
    } catch (error) {
      if (following.signal.aborted) {
        showProgress("Cancelled before the clip was sent", 0, 1);
        announce(`Cancelled: ${file.name}.`);
      } else {
        $("video-job").hidden = true;
        announce(`Failed: ${messageOf(error)}`);
      }
      forget();
      return;
    }
    job = { id: described.id, name: file.name, format: chosen.format };
    sessionStorage.setItem(JOB_STORAGE, JSON.stringify(job));
    announce(`${file.name} is queued.`);
    await follow(described);
  }

  async function cancel() {
    const cancelling = job;
    following.abort();
    if (!cancelling) return; // still sending: the aborted upload ends it
    $("video-cancel").disabled = true;
    let described;
    try {
      described = await cancelJob(cancelling.id);
    } catch (error) {
      announce(`The job could not be cancelled: ${messageOf(error)}`);
      following = new AbortController();
      described = await jobStatus(cancelling.id, following.signal).catch(() => null);
      if (!described) return forget();
    }
    following = new AbortController();
    await follow(described);
  }

  $("video-file").addEventListener("change", (event) => {
    pick(event.target.files[0]);
    event.target.value = "";
  });
  dropZone($("video-drop"), (found) => pick(found.map((entry) => entry.file)[0]));
  $("video-run").addEventListener("click", run);
  $("video-cancel").addEventListener("click", cancel);
  $("video-play-both").addEventListener("click", () => {
    for (const video of [before, after]) {
      if (!video.src || video.closest("[hidden]")) continue;
      video.currentTime = 0;
      video.play();
    }
  });

  const saved = sessionStorage.getItem(JOB_STORAGE);
  if (saved) {
    job = JSON.parse(saved);
    following = new AbortController();
    setBusy(true);
    $("video-before-figure").hidden = true;
    showTab();
    announce(`Following ${job.name} again: the clip itself is not kept across a reload.`);
    jobStatus(job.id, following.signal).then(follow, () => {
      announce("The service no longer knows the video job of the last visit.");
      forget();
    });
  }
}

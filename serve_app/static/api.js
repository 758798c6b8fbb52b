// Calls to the service's JSON API: the API key when the service asks for one (401),
// and waits on 503 as long as its Retry-After says. URLs are relative to the page, so
// the page works under any route prefix.

const KEY_STORAGE = "cartoon.apiKey";
const MAX_WAITS = 8; // 503s or dropped connections in a row before giving up
const MAX_WAIT_S = 30;

/** An answer other than 200, with the service's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The API key the person gave in this tab, or null. */
export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

let keyRequest = null; // one dialog for all the requests that got a 401 at once

/** Asks the person for the API key (one dialog at a time); resolves once one is stored. */
export function askForKey(refused) {
  if (!keyRequest) {
    const dialog = document.getElementById("key-dialog");
    const input = document.getElementById("key-input");
    document.getElementById("key-reason").textContent = refused
      ? "The service refused that key. Enter a valid API key."
      : "This service needs an API key.";
    input.value = "";
    dialog.returnValue = "";
    keyRequest = new Promise((resolve, reject) => {
      dialog.addEventListener(
        "close",
        () => {
          keyRequest = null;
          if (dialog.returnValue === "ok" && input.value.trim()) {
            sessionStorage.setItem(KEY_STORAGE, input.value.trim());
            resolve();
          } else {
            reject(new ApiError(401, "unauthorized", "an API key is needed and none was given"));
          }
        },
        { once: true },
      );
    });
    document.getElementById("key-cancel").onclick = () => dialog.close("cancel");
    dialog.showModal();
    input.focus();
  }
  return keyRequest;
}

function sleep(seconds, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

function retryAfterSeconds(response, attempt) {
  const header = Number(response.headers.get("Retry-After"));
  const backoff = Math.min(MAX_WAIT_S, 2 ** attempt);
  const base = Number.isFinite(header) && header >= 0 ? Math.min(header, MAX_WAIT_S) : backoff;
  return base + Math.random() * 0.5; // jitter: the waiting clients do not return all at once
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    return new ApiError(response.status, "http_" + response.status, `the service answered ${response.status}`);
  }
}

/**
 * fetch() against the service: asks for the API key on 401, waits and retries on 503
 * (honouring Retry-After) and on a dropped connection.
 * @param {string} path  relative to the page, e.g. "v1/styles"
 * @param {RequestInit} init
 * @param {(seconds: number) => void} [onWait]  told before each wait
 * @returns {Promise<Response>} a 2xx response; anything else throws an ApiError
 */
export async function call(path, init = {}, onWait) {
  let refused = false;
  for (let attempt = 0; ; attempt++) {
    const headers = new Headers(init.headers || {});
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    let response;
    try {
      response = await fetch(new URL(path, document.baseURI), { ...init, headers });
    } catch (error) {
      if (init.signal?.aborted) throw error;
      if (attempt >= MAX_WAITS) throw new ApiError(0, "unreachable", "the service could not be reached");
      const seconds = Math.min(MAX_WAIT_S, 2 ** attempt) + Math.random() * 0.5;
      onWait?.(seconds);
      await sleep(seconds, init.signal);
      continue;
    }
    if (response.ok) return response;
    if (response.status === 401) {
      await askForKey(refused || Boolean(key));
      refused = true;
      continue;
    }
    if (response.status === 503 && attempt < MAX_WAITS) {
      const seconds = retryAfterSeconds(response, attempt);
      onWait?.(seconds);
      await sleep(seconds, init.signal);
      continue;
    }
    throw await errorOf(response);
  }
}

/**
 * Cartoonizes one image.
 * @param {Blob} image
 * @param {{style: string, strength: number, format: string, maxSide: number|null}} options
 * @returns {Promise<{blob: Blob, faces: number, serverMs: number|null, ms: number}>}
 */
export async function cartoonize(image, options, signal, onWait) {
  const query = new URLSearchParams({ strength: String(options.strength), format: options.format });
  if (options.style) query.set("style", options.style);
  if (options.maxSide) query.set("max_side", String(options.maxSide));
  const start = performance.now();
  const response = await call(
    `v1/cartoonize?${query}`,
    { method: "POST", body: image, headers: { "Content-Type": image.type || "application/octet-stream" }, signal },
    onWait,
  );
  const blob = await response.blob();
  const total = /(?:^|,)\s*total;dur=([\d.]+)/.exec(response.headers.get("Server-Timing") || "");
  return {
    blob,
    faces: Number(response.headers.get("X-Faces") || 0),
    serverMs: total ? Number(total[1]) : null,
    ms: performance.now() - start,
  };
}

/**
 * Starts a video job: the clip goes up as the request's body.
 * @param {Blob} clip
 * @param {string} type  the clip's media type (video/mp4, ...)
 * @param {{style: string, strength: number, maxSide: number|null, format: string}} options
 *   format: the video's container (mp4, webm, mov, mkv)
 * @returns {Promise<object>} the job as the service describes it ({id, state, progress, error})
 */
export async function submitJob(clip, type, options, signal, onWait) {
  const query = new URLSearchParams({ strength: String(options.strength), format: options.format });
  if (options.style) query.set("style", options.style);
  if (options.maxSide) query.set("max_side", String(options.maxSide));
  const response = await call(
    `v1/jobs?${query}`,
    { method: "POST", body: clip, headers: { "Content-Type": type }, signal },
    onWait,
  );
  return response.json();
}

/** The job's state and progress. */
export async function jobStatus(id, signal, onWait) {
  return (await call(`v1/jobs/${encodeURIComponent(id)}`, { signal }, onWait)).json();
}

/** Cancels the job; returns it as it is now (state cancelled, or already finished). */
export async function cancelJob(id) {
  return (await call(`v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" })).json();
}

/** The finished job's video. */
export async function jobResult(id, signal, onWait) {
  return (await call(`v1/jobs/${encodeURIComponent(id)}/result`, { signal }, onWait)).blob();
}

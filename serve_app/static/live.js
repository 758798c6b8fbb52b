// The live tab: the camera's frames go to GET /v1/live over a WebSocket, as JPEG, and the
// cartoon frames coming back are drawn beside the camera. At most two frames are
// unanswered at once (one in flight, one waiting at the service), so a slow service
// costs frames, not latency. Style and strength follow the Settings panel while it runs.
import { apiKey, askForKey } from "./api.js";

const CAMERA_FPS = 30;
const MAX_UNANSWERED = 2;
const FRAME_QUALITY = 0.8;
const STATS_WINDOW_MS = 2000;
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_SESSION_TIME = 4000; // the service's bound on one session: a new one goes on

const $ = (id) => document.getElementById(id);

function liveUrl() {
  const url = new URL("v1/live", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

/**
 * Wires the live tab.
 * @param {{announce: (message: string) => void,
 *          options: () => {style: string, strength: number}}} page
 */
export function setUpLive({ announce, options }) {
  const camera = $("live-camera-view");
  const cartoon = $("live-cartoon");
  const drawing = cartoon.getContext("2d");
  const grab = document.createElement("canvas");
  const stats = $("live-stats");
  let stream = null; // the camera's MediaStream
  let socket = null;
  let timer = null;
  let sent = 0; // frames sent on this socket; the service numbers them the same way (seq)
  const sentAt = new Map(); // seq -> performance.now() when it was sent
  let answered = -1; // the newest seq that came back
  let expected = null; // the "frame" message that announces the next binary one
  let shown = []; // [time, latency ms] of frames drawn within the stats window
  let dropped = 0;
  let recorder = null;

  function settings() {
    const { style, strength } = options();
    return { style, strength, size: Number($("live-size").value), format: "jpeg", quality: 80 };
  }

  function setRunning(running) {
    $("live-start").disabled = running;
    $("live-stop").disabled = !running;
    $("live-snapshot").disabled = !running;
    $("live-record").disabled = !running;
    $("live-camera").disabled = running;
  }

  async function listCameras() {
    const select = $("live-camera");
    const chosen = select.value;
    const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((device) => device.kind === "videoinput");
    select.replaceChildren(...cameras.map((device, index) => {
      const option = document.createElement("option");
      option.value = device.deviceId;
      option.textContent = device.label || `Camera ${index + 1}`;
      return option;
    }));
    if (cameras.some((device) => device.deviceId === chosen)) select.value = chosen;
  }

  function showStats() {
    const now = performance.now();
    shown = shown.filter(([time]) => now - time <= STATS_WINDOW_MS);
    const fps = shown.length / (STATS_WINDOW_MS / 1000);
    const latencies = shown.map(([, latency]) => latency).sort((a, b) => a - b);
    const median = latencies.length ? latencies[Math.floor(latencies.length / 2)] : null;
    stats.dataset.fps = fps.toFixed(1);
    stats.textContent = `${fps.toFixed(1)} frames/s · latency ${median === null ? "–" : Math.round(median)} ms`
      + ` · dropped ${dropped}`;
  }

  function sendFrame() {
    if (!socket || socket.readyState !== WebSocket.OPEN || !camera.videoWidth) return;
    if (sent - 1 - answered >= MAX_UNANSWERED) return;
    const size = Number($("live-size").value);
    const scale = Math.min(1, size / Math.max(camera.videoWidth, camera.videoHeight));
    grab.width = Math.round(camera.videoWidth * scale);
    grab.height = Math.round(camera.videoHeight * scale);
    grab.getContext("2d").drawImage(camera, 0, 0, grab.width, grab.height);
    const seq = sent++;
    sentAt.set(seq, performance.now());
    grab.toBlob((blob) => {
      if (blob && socket?.readyState === WebSocket.OPEN) socket.send(blob);
    }, "image/jpeg", FRAME_QUALITY);
  }

  async function draw(blob) {
    const frame = expected;
    expected = null;
    const bitmap = await createImageBitmap(blob);
    if (cartoon.width !== bitmap.width || cartoon.height !== bitmap.height) {
      cartoon.width = bitmap.width;
      cartoon.height = bitmap.height;
    }
    drawing.drawImage(bitmap, 0, 0);
    bitmap.close();
    if (!frame) return;
    answered = Math.max(answered, frame.seq);
    dropped = frame.dropped;
    shown.push([performance.now(), performance.now() - sentAt.get(frame.seq)]);
    for (const seq of sentAt.keys()) if (seq <= frame.seq) sentAt.delete(seq);
    cartoon.dataset.frames = String(Number(cartoon.dataset.frames || 0) + 1);
    showStats();
  }

  function onMessage(event) {
    if (event.data instanceof Blob) {
      draw(event.data);
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === "frame") expected = message;
    // What the service now uses, for whoever inspects the page (and its tests).
    if (message.type === "ready" || message.type === "settings") cartoon.dataset.settings = JSON.stringify(message.settings);
    if (message.type === "ready") {
      announce("Live: the cartoon follows your camera.");
      timer = setInterval(sendFrame, 1000 / CAMERA_FPS);
    }
    if (message.type === "error") announce(`Live: ${message.message}`);
  }

  function onClose(event) {
    const wasOurs = socket === event.target;
    if (!wasOurs) return;
    stop();
    if (event.code === CLOSE_SESSION_TIME) {
      start();
      return;
    }
    if (event.code === CLOSE_UNAUTHORIZED) {
      askForKey(Boolean(apiKey())).then(start, () => announce("Live needs an API key."));
      return;
    }
    const reason = event.reason || "the connection was lost";
    $("live-reason").textContent = event.code === 1000 ? "" : `The service ended the session: ${reason}`;
    if (event.code !== 1000) announce(`Live stopped: ${reason}`);
  }

  async function start() {
    $("live-reason").textContent = "";
    try {
      const deviceId = $("live-camera").value;
      stream = await navigator.mediaDevices.getUserMedia({
        video: deviceId ? { deviceId: { exact: deviceId } } : { width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
    } catch (error) {
      announce(`The camera could not be opened: ${error.message || error.name}`);
      return;
    }
    camera.srcObject = stream;
    await listCameras();
    sent = 0;
    answered = -1;
    dropped = 0;
    sentAt.clear();
    shown = [];
    socket = new WebSocket(liveUrl());
    cartoon.dataset.sessions = String(Number(cartoon.dataset.sessions || 0) + 1);
    socket.addEventListener("open", () => {
      const key = apiKey();
      socket.send(JSON.stringify({ ...settings(), ...(key ? { api_key: key } : {}) }));
    });
    socket.addEventListener("message", onMessage);
    socket.addEventListener("close", onClose);
    setRunning(true);
    announce("Live: connecting…");
  }

  function stop() {
    clearInterval(timer);
    timer = null;
    if (recorder?.state === "recording") recorder.stop();
    const closing = socket;
    socket = null;
    if (closing && closing.readyState <= WebSocket.OPEN) closing.close(1000, "stopped");
    for (const track of stream?.getTracks() || []) track.stop();
    stream = null;
    camera.srcObject = null;
    setRunning(false);
  }

  function sendSettings() {
    if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify(settings()));
  }

  $("live-start").addEventListener("click", start);
  $("live-stop").addEventListener("click", () => {
    stop();
    announce("Live stopped.");
  });
  $("live-size").addEventListener("change", sendSettings);
  $("strength").addEventListener("change", sendSettings);
  $("style-options").addEventListener("change", sendSettings);

  $("live-snapshot").addEventListener("click", () => {
    cartoon.toBlob((blob) => {
      if (blob) download(blob, `cartoon-${new Date().toISOString().replace(/[:.]/g, "-")}.png`);
    }, "image/png");
  });

  $("live-record").addEventListener("click", () => {
    const button = $("live-record");
    if (recorder?.state === "recording") {
      recorder.stop();
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(cartoon.captureStream(CAMERA_FPS), { mimeType: "video/webm" });
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data.size) chunks.push(event.data);
    });
    recorder.addEventListener("stop", () => {
      button.textContent = "Record";
      button.setAttribute("aria-pressed", "false");
      const link = $("live-recording");
      if (link.href) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(new Blob(chunks, { type: "video/webm" }));
      link.download = "cartoon-live.webm";
      link.hidden = false;
      announce("The recording is ready to download.");
    });
    recorder.start(250);
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
  });

  if (!navigator.mediaDevices?.getUserMedia || !window.WebSocket) {
    $("live-start").disabled = true;
    $("live-reason").textContent = "This browser cannot share its camera with the page (it needs HTTPS or localhost).";
  }
}

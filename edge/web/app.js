// The kiosk page of edge-serve: camera and microphone -> /v1/stream (protocol lfmim-edge.v1) -> live bars.
// Plain JavaScript, no build step. Nothing is stored by the page; the server stores media only with --record.

const params = new URLSearchParams(location.search);
const TOKEN = params.get("token");
const CHUNK_MS = 100; // audio per message
const MAX_BUFFERED = 1 << 20; // skip video frames while this much is waiting to be sent (slow network)
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const SHOWN = ["fused", "vision", "audio", "text"];

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), capturing: $("capturing"), start: $("start"), stop: $("stop"), fps: $("fps"),
  preview: $("preview"), transcript: $("transcript"), latency: $("latency"), log: $("log"),
  record: $("record-notice"), privacy: $("privacy"), random: $("random-notice"),
};

const state = {
  media: null, audioCtx: null, worklet: null, sink: null, ctxOffset: 0, canvas: null, frameTimer: null,
  ws: null, streaming: false, wanted: false, attempt: 0, reconnectTimer: null, encoding: false,
  results: 0, classes: null, fps: null, closing: null,
};
window.edgeKiosk = state; // for tests and curious kiosk builders

function clientNow() { return performance.now() / 1000; }

function setStatus(text, kind) {
  ui.status.textContent = text;
  document.body.dataset.state = kind;
}

function note(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  ui.log.prepend(li);
  while (ui.log.children.length > 8) ui.log.lastChild.remove();
}

// -- bars ---------------------------------------------------------------------------------------------------------
function buildBars(classes) {
  state.classes = classes;
  for (const m of SHOWN) {
    const box = $(`m-${m}`).querySelector(".bars");
    box.replaceChildren();
    for (const name of classes) {
      const row = document.createElement("div");
      row.className = "bar";
      row.dataset.name = name;
      row.innerHTML = `<span></span><div class="track"><div class="fill"></div></div><span class="value">-</span>`;
      row.firstChild.textContent = name;
      box.append(row);
    }
  }
}

function showResult(r) {
  state.results += 1;
  document.body.dataset.results = String(state.results);
  for (const m of SHOWN) {
    const box = $(`m-${m}`);
    const p = r[m];
    const available = m === "fused" ? p !== null : Boolean(r.available[m]);
    box.dataset.available = String(available && p !== null);
    box.querySelector(".label").textContent = p ? p.label : "-";
    for (const row of box.querySelectorAll(".bar")) {
      const entry = p ? p.probabilities.find((e) => e.name === row.dataset.name) : null;
      const v = entry ? entry.probability : 0;
      row.querySelector(".fill").style.width = `${(100 * v).toFixed(1)}%`;
      row.querySelector(".value").textContent = entry ? v.toFixed(2) : "-";
    }
  }
  ui.transcript.textContent = r.transcript || "-";
  // media_time is on this page's clock (performance.now): how long after its moment the estimate arrived
  const delay = Math.max(0, 1000 * (clientNow() - r.media_time));
  const lost = r.dropped.results ? `, ${r.dropped.results} results dropped` : "";
  ui.latency.textContent = `estimate ${r.index}: arrived ${Math.round(delay)} ms after its moment` + lost;
}

// -- the connection -----------------------------------------------------------------------------------------------
function streamURL() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/stream` + (TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : "");
}

function connect() {
  state.reconnectTimer = null;
  setStatus("Connecting...", "connecting");
  const ws = new WebSocket(streamURL());
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onmessage = (event) => onMessage(ws, JSON.parse(event.data));
  ws.onclose = (event) => onClose(ws, event);
  ws.onerror = () => {}; // onclose follows and says what happened
}

function onMessage(ws, msg) {
  switch (msg.type) {
    case "session.created": {
      state.attempt = 0;
      if (!state.classes) buildBars(msg.server.classes);
      ui.record.hidden = !msg.record;
      ui.privacy.hidden = msg.record;
      ui.random.hidden = !msg.server.random_weights;
      if (state.fps === null) fillFps(msg.config.fps, msg.limits.max_fps);
      ws.send(JSON.stringify({ type: "session.update", config: { fps: Number(ui.fps.value) } }));
      break;
    }
    case "session.updated":
      state.streaming = true;
      state.fps = msg.config.fps;
      restartFrames();
      setStatus(`Connected: ${msg.config.modalities.join(", ")} at ${msg.config.rate} estimates/s`, "streaming");
      break;
    case "measurement.result":
      showResult(msg);
      break;
    case "error":
      note(`${msg.code}: ${msg.message}`);
      break;
    case "session.closed":
      state.streaming = false;
      if (state.closing) state.closing();
      break;
  }
}

function onClose(ws, event) {
  if (ws !== state.ws) return;
  state.ws = null;
  state.streaming = false;
  if (state.closing) state.closing();
  if (!state.wanted) { setStatus("Stopped", "idle"); return; }
  if (event.code === 1008 || event.code === 4401) { setStatus("Refused: check the token", "error"); return; }
  const delay = BACKOFF_MS[Math.min(state.attempt, BACKOFF_MS.length - 1)];
  state.attempt += 1;
  setStatus(`Connection lost (${event.code}); reconnecting in ${(delay / 1000).toFixed(1)} s`, "reconnecting");
  state.reconnectTimer = setTimeout(connect, delay);
}

function sendMedia(kind, t, payload) {
  const ws = state.ws;
  if (!ws || !state.streaming || ws.readyState !== WebSocket.OPEN) return false;
  const bytes = new Uint8Array(9 + payload.byteLength);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, kind.charCodeAt(0));
  view.setFloat64(1, t, true);
  bytes.set(new Uint8Array(payload), 9);
  ws.send(bytes.buffer);
  return true;
}

// -- capture ------------------------------------------------------------------------------------------------------
function fillFps(preferred, max) {
  ui.fps.replaceChildren();
  for (const f of [2, 4, 8, 12, 16].filter((f) => f <= max)) {
    const o = document.createElement("option");
    o.value = String(f);
    o.textContent = String(f);
    o.selected = f === preferred;
    ui.fps.append(o);
  }
  if (!ui.fps.value) ui.fps.value = String(Math.min(8, max));
  state.fps = Number(ui.fps.value);
}

function restartFrames() {
  clearInterval(state.frameTimer);
  state.frameTimer = setInterval(grabFrame, 1000 / state.fps);
}

function grabFrame() {
  const video = ui.preview;
  if (!state.streaming || state.encoding || video.readyState < 2 || !video.videoWidth) return;
  if (state.ws && state.ws.bufferedAmount > MAX_BUFFERED) return; // the network is behind: skip this frame
  const scale = Math.min(1, 640 / video.videoWidth);
  const w = Math.round(video.videoWidth * scale), h = Math.round(video.videoHeight * scale);
  const canvas = state.canvas || (state.canvas = document.createElement("canvas"));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  canvas.getContext("2d").drawImage(video, 0, 0, w, h);
  const t = clientNow();
  state.encoding = true;
  canvas.toBlob(async (blob) => {
    try { if (blob) sendMedia("V", t, await blob.arrayBuffer()); } finally { state.encoding = false; }
  }, "image/jpeg", 0.8);
}

async function startAudio(stream) {
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule("pcm-worklet.js");
  const source = ctx.createMediaStreamSource(stream);
  const worklet = new AudioWorkletNode(ctx, "pcm16-resampler", {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { targetRate: 16000, chunkMs: CHUNK_MS },
  });
  const sink = ctx.createGain(); // keeps the worklet pulled by the graph, silently
  sink.gain.value = 0;
  source.connect(worklet).connect(sink).connect(ctx.destination);
  if (ctx.state !== "running") await ctx.resume();
  const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
  state.ctxOffset = ts && ts.performanceTime ? ts.performanceTime / 1000 - ts.contextTime
                                             : clientNow() - ctx.currentTime;
  worklet.port.onmessage = (e) => sendMedia("A", e.data.time + state.ctxOffset, e.data.pcm);
  Object.assign(state, { audioCtx: ctx, worklet, sink });
}

async function start() {
  ui.start.disabled = true;
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    state.media = media;
    ui.preview.srcObject = media;
    await startAudio(media);
  } catch (err) {
    note(`camera or microphone unavailable: ${err.name}: ${err.message}`);
    setStatus("No camera or microphone", "error");
    stopCapture();
    ui.start.disabled = false;
    return;
  }
  state.wanted = true;
  ui.capturing.hidden = false;
  ui.stop.disabled = false;
  connect();
}

function stopCapture() {
  clearInterval(state.frameTimer);
  state.frameTimer = null;
  if (state.audioCtx) state.audioCtx.close();
  if (state.media) for (const track of state.media.getTracks()) track.stop();
  ui.preview.srcObject = null;
  Object.assign(state, { audioCtx: null, worklet: null, sink: null, media: null });
  ui.capturing.hidden = true;
}

async function stop() {
  state.wanted = false;
  ui.stop.disabled = true;
  clearTimeout(state.reconnectTimer);
  stopCapture(); // no more media from here on
  const ws = state.ws;
  if (ws && ws.readyState === WebSocket.OPEN) {
    setStatus("Finishing...", "closing");
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 5000);
      state.closing = () => { clearTimeout(timer); resolve(); };
      ws.send(JSON.stringify({ type: "session.close" }));
    });
    state.closing = null;
    ws.close();
  }
  state.ws = null;
  state.streaming = false;
  setStatus("Stopped", "idle");
  ui.start.disabled = false;
}

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
ui.fps.addEventListener("change", () => {
  if (state.ws) note("the frame rate applies from the next session (press Stop, then Start)");
});
if (!window.isSecureContext) note("this page needs a secure context (https, or http://127.0.0.1) for the camera");

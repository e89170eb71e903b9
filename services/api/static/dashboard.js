// The reelflow dashboard: jobs and cameras of a stack, live. Plain DOM; every value from the API is
// set as text (never parsed as HTML). Talks only to this API: GET v1/dashboard once (to learn
// whether the token is right), then the server-sent events of v1/dashboard/events.
"use strict";

const TOKEN_KEY = "reelflow-api-token";
const WINDOW_S = 60;  // seconds of stream time a camera's timeline shows
const KEPT = 200;  // results kept per camera

const cameras = new Map();  // name -> {row, results: [{index, start_s, end_s, label, score, ...}], card}
let source = null;

// The token: from ?token= once (then out of the address bar), else this tab's sessionStorage.
function takeToken() {
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function start() {
  const token = takeToken();
  setConnection("waiting", "connecting");
  let response;
  try {
    response = await fetch("v1/dashboard", {headers: token ? {Authorization: "Bearer " + token} : {}});
  } catch (error) {
    setConnection("waiting", "API unreachable, retrying");
    setTimeout(start, 3000);
    return;
  }
  if (response.status === 401) {
    showLogin(token ? "That token was refused." : "");
    return;
  }
  if (!response.ok) {
    setConnection("waiting", "API error " + response.status + ", retrying");
    setTimeout(start, 3000);
    return;
  }
  showBoard();
  renderState(await response.json());
  follow(token);
}

function follow(token) {
  if (source) source.close();
  source = new EventSource("v1/dashboard/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  source.addEventListener("open", () => setConnection("live", "live"));
  source.addEventListener("state", (event) => renderState(JSON.parse(event.data)));
  source.addEventListener("segments", (event) => addSegments(JSON.parse(event.data)));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {  // refused (e.g. the token changed): start over
      source = null;
      setTimeout(start, 3000);
    }
    setConnection("waiting", "reconnecting");
  });
}

function showLogin(message) {
  if (source) source.close();
  source = null;
  setConnection("signed-out", "token needed");
  document.getElementById("board").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message;
  document.getElementById("token").focus();
}

function showBoard() {
  document.getElementById("login").hidden = true;
  document.getElementById("board").hidden = false;
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  start();
});

function setConnection(kind, text) {
  const element = document.getElementById("connection");
  element.className = kind;
  element.textContent = text;
}

// -- small DOM helpers --

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Distinct colours for the first labels seen, in order (the same label has the same colour on every
// camera of this page); past those, a hue from the label's hash.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#7f7f7f", "#393b79", "#e7ba52", "#637939", "#ad494a", "#6b6ecf", "#3182bd"];
const colours = new Map();

function labelColour(label) {
  if (!colours.has(label)) {
    let hash = 2166136261;
    for (let i = 0; i < label.length; i++) hash = Math.imul(hash ^ label.charCodeAt(i), 16777619);
    colours.set(label, colours.size < PALETTE.length ? PALETTE[colours.size] : `hsl(${(hash >>> 0) % 360}, 60%, 48%)`);
  }
  return colours.get(label);
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? "–" : Math.round(seconds * 1000) + " ms";
}

function basename(path) {
  return String(path || "").split("/").filter(Boolean).pop() || String(path || "");
}

function clock(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleTimeString() : "–";
}

// -- the stack: header, jobs, cameras --

function renderState(state) {
  const q = state.queue || {};
  document.getElementById("queue").replaceChildren(
    "queue ", el("b", {}, q.waiting ?? 0), " waiting · ", el("b", {}, q.pending ?? 0), " claimed · ",
    el("b", {}, q.retrying ?? 0), " retrying");
  document.getElementById("workers").replaceChildren("workers ", el("b", {}, state.workers ?? 0));
  document.getElementById("models").replaceChildren(
    "models ", el("b", {}, (state.models || []).map((m) => `${m.name} ×${m.replicas}`).join(", ") || "none"));
  renderJobs(state.jobs || []);
  renderCameras(state.cameras || []);
}

function renderJobs(jobs) {
  document.getElementById("job-count").textContent = jobs.length ? `(latest ${jobs.length})` : "";
  const box = document.getElementById("jobs");
  if (!jobs.length) {
    box.replaceChildren(el("div", {class: "empty"}, "No jobs yet: ", el("code", {}, "reelflow submit VIDEO"),
                           " or POST /v1/jobs."));
    return;
  }
  const rows = jobs.map((job) => {
    const total = job.segments_total, done = job.segments_done || 0;
    const share = total ? Math.min(100, (100 * done) / total) : (job.state === "done" ? 100 : 0);
    return el("tr", {"data-job": job.job_id},
      el("td", {class: "id"}, job.job_id),
      el("td", {class: "source", title: job.source || ""}, basename(job.source)),
      el("td", {}, job.model || "–"),
      el("td", {}, el("span", {class: "badge " + job.state}, job.state)),
      el("td", {}, el("div", {class: "progress"},
        el("div", {class: "bar"}, el("div", {class: job.state, style: {width: share + "%"}})),
        el("span", {}, `${done}/${total ?? "?"}`))),
      el("td", {}, job.attempts ?? 0),
      el("td", {class: "when"}, clock(job.created_at)),
      el("td", {class: "error"}, job.state === "done" ? "" : job.error || ""));
  });
  box.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ...["job", "source", "model", "state", "progress", "attempts", "submitted", ""]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows)));
}

function renderCameras(rows) {
  document.getElementById("camera-count").textContent = rows.length ? `(${rows.length})` : "";
  const box = document.getElementById("cameras");
  const names = new Set(rows.map((row) => row.name));
  for (const name of [...cameras.keys()]) if (!names.has(name)) cameras.delete(name);
  for (const row of rows) {
    const camera = cameras.get(row.name) || {results: []};
    camera.row = row;
    if (row.current && !camera.results.some((r) => r.index === row.current.index)) pushResults(camera, [row.current]);
    cameras.set(row.name, camera);
  }
  if (!rows.length) {
    box.replaceChildren(el("div", {class: "empty"}, "No cameras: ", el("code", {}, "reelflow watch URL --name NAME"),
                           " or POST /v1/streams."));
    return;
  }
  box.replaceChildren(...rows.map((row) => cameraCard(cameras.get(row.name))));
}

function addSegments(message) {
  const camera = cameras.get(message.camera) || {results: [], row: null};
  pushResults(camera, message.results);
  cameras.set(message.camera, camera);
  if (camera.row && camera.card && camera.card.isConnected) camera.card.replaceWith(cameraCard(camera));
}

function pushResults(camera, results) {
  const seen = new Set(camera.results.map((r) => r.index));
  for (const result of results) if (!seen.has(result.index)) camera.results.push(result);
  camera.results.sort((a, b) => a.index - b.index);
  if (camera.results.length > KEPT) camera.results.splice(0, camera.results.length - KEPT);
}

function cameraCard(camera) {
  const row = camera.row, results = camera.results;
  const current = results.length ? results[results.length - 1] : row.current;
  const label = current && current.label ? current.label : "waiting for the first segment";
  const state = row.state || "unowned";
  camera.card = el("article", {class: "camera", "data-camera": row.name},
    el("div", {class: "top"}, el("span", {class: "name"}, row.name),
      el("span", {class: "badge " + state.replace(/\s+/g, "-")}, state),
      el("span", {class: "url", title: row.url}, row.url)),
    el("div", {class: "label"},
      current && current.label ? el("span", {class: "swatch", style: {background: labelColour(current.label)}}) : null,
      el("span", {}, label),
      current && current.score !== null && current.score !== undefined
        ? el("span", {class: "score"}, current.score.toFixed(2) + " smoothed") : null),
    el("div", {class: "metrics"},
      el("span", {}, "latency p50 ", el("b", {}, ms(row.latency_p50_s))),
      el("span", {}, "p95 ", el("b", {}, ms(row.latency_p95_s))),
      el("span", {}, "dropped ", el("b", {}, row.dropped ?? 0)),
      el("span", {}, "reconnects ", el("b", {}, row.reconnects ?? 0)),
      el("span", {}, "segments ", el("b", {}, row.segments ?? 0)),
      el("span", {}, "model ", el("b", {}, row.model))),
    ...timeline(results),
    row.last_error && state !== "live" ? el("div", {class: "metrics"}, row.last_error) : null,
    clipsBox(camera, row),
    rulesForm(camera, row));
  return camera.card;
}

// -- evidence clips: the latest of each camera, playable here; and its recording rules, editable --

// A clip's player is made once and moved into each new card, so a clip playing goes on playing.
function clipsBox(camera, row) {
  camera.clipNodes = camera.clipNodes || new Map();
  const clips = row.clips || [];
  const rec = row.recording || {};
  const shown = clips.map((clip) => {
    const key = clip.id + "/" + clip.state;
    if (!camera.clipNodes.has(key)) camera.clipNodes.set(key, clipNode(clip));
    return camera.clipNodes.get(key);
  });
  const keys = new Set(clips.map((clip) => clip.id + "/" + clip.state));
  for (const key of [...camera.clipNodes.keys()]) if (!keys.has(key)) camera.clipNodes.delete(key);
  const summary = rec.record && rec.record.length
    ? `${rec.clips_ready ?? 0} clips, ${rec.clips_failed ?? 0} failed` +
      (rec.mode ? `; ${rec.mode}, buffer ${((rec.ring_bytes || 0) / 1048576).toFixed(1)} MiB` : "") +
      (rec.mode_note ? `; ${rec.mode_note}` : "") + (rec.rule_error ? `; ${rec.rule_error}` : "")
    : "";
  if (!shown.length && !summary) return null;
  return el("div", {class: "clips"}, summary ? el("div", {class: "metrics"}, summary) : null, ...shown);
}

function clipNode(clip) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const title = `${clip.label} · ${clock(clip.started_at)} · ${clip.duration_s.toFixed(1)} s`;
  if (clip.state === "ready") {
    return el("figure", {class: "clip", "data-clip": clip.id},
      el("video", {controls: "", preload: "metadata", muted: "",
                   src: `v1/clips/${encodeURIComponent(clip.id)}/video` + (token ? "?token=" + encodeURIComponent(token) : "")}),
      el("figcaption", {}, title));
  }
  return el("figure", {class: "clip " + clip.state, "data-clip": clip.id},
    el("figcaption", {}, `${title} — ${clip.state}` + (clip.reason ? `: ${clip.reason}` : "")));
}

// The rules form is made once per camera too (what is being typed survives the live updates).
function rulesForm(camera, row) {
  if (camera.form) {
    camera.form.querySelector(".saved").textContent = camera.form.dataset.message || "";
    return camera.form;
  }
  const rules = row.rules || {record: [], pre_s: 5, post_s: 5, max_clip_s: 60};
  const input = (name, value, size) => el("input", {name, value: String(value), size: String(size), "aria-label": name});
  const form = el("form", {class: "rules"},
    el("span", {}, "record "), input("record", rules.record.join(", "), 18),
    el("span", {}, " pre "), input("pre_s", rules.pre_s, 3), el("span", {}, " post "), input("post_s", rules.post_s, 3),
    el("button", {type: "submit", class: "small"}, "Save"), el("span", {class: "saved"}, ""));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    const value = (name) => form.querySelector(`[name=${name}]`).value;
    const labels = value("record").split(",").map((label) => label.trim()).filter(Boolean);
    const body = {record: labels, pre_s: Number(value("pre_s")), post_s: Number(value("post_s")),
                  max_clip_s: rules.max_clip_s};
    const response = await fetch(`v1/streams/${encodeURIComponent(row.name)}/recording`, {
      method: "PUT", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json", ...(token ? {Authorization: "Bearer " + token} : {})}});
    const answer = await response.json().catch(() => ({}));
    form.dataset.message = response.ok ? "saved" : (answer.detail || "error " + response.status);
    form.querySelector(".saved").textContent = form.dataset.message;
  });
  camera.form = form;
  return form;
}

function timeline(results) {
  // a fixed window that fills from the left, then scrolls: the newest segment is always at the right end
  const latest = results.length ? results[results.length - 1].end_s : 0;
  const start = Math.max(0, latest - WINDOW_S), end = start + WINDOW_S, span = WINDOW_S;
  const shown = results.filter((r) => r.end_s > start);
  const bands = shown.map((r, i) => {
    const until = i + 1 < shown.length ? Math.min(r.end_s, shown[i + 1].start_s) : r.end_s;
    const from = Math.max(r.start_s, start);
    return el("div", {title: `#${r.index} ${r.start_s.toFixed(1)}–${r.end_s.toFixed(1)} s: ${r.label ?? "?"}` +
                             (r.score !== null && r.score !== undefined ? ` (${r.score.toFixed(2)})` : ""),
      style: {left: (100 * (from - start)) / span + "%", width: Math.max(0, (100 * (until - from)) / span) + "%",
              background: r.label ? labelColour(r.label) : "#9ca3af"}});
  });
  const labels = [...new Set(shown.map((r) => r.label).filter(Boolean))];
  return [
    el("div", {class: "timeline", "data-segments": shown.length}, ...bands),
    el("div", {class: "axis"}, el("span", {}, start.toFixed(0) + " s"), el("span", {}, "stream time"),
       el("span", {}, end.toFixed(0) + " s")),
    el("div", {class: "legend"}, ...labels.map((label) =>
      el("span", {}, el("span", {class: "swatch", style: {background: labelColour(label)}}), label))),
  ];
}

start();

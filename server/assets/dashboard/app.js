// keel dashboard — plain JS, no build step, no third-party code.
//
// Sections:
//   1. DOM helpers
//   2. Auth and the API client (bearer token in sessionStorage, asked for on 401)
//   3. Tabs
//   4. Endpoints tab        (GET /api/2.0/serving-endpoints, registry aliases)
//   5. Prometheus text parsing and histogram quantiles
//   6. Metrics history     (poll /metrics every second, keep 5 minutes)
//   7. SVG line charts
//   8. Live metrics tab
//   9. Monitoring tab      (GET /api/2.0/keel/monitoring)
//  10. Playground          (streamed /v1/chat/completions or /v1/completions, snippets)
//  11. Start-up
//
// Everything runs in this browser tab; the server keeps nothing of it.

"use strict";

// ---------------------------------------------------------------------------
// 1. DOM helpers
// ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** Creates an element: el("td", {class: "x", "data-a": 1}, "text", child, ...). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmtNumber(v, digits = 1) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(digits) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(digits) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(digits) + "k";
  if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(a >= 10 ? 1 : 2);
}

function fmtMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms.toFixed(ms >= 10 ? 0 : 1) + " ms";
}

function showBanner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

// ---------------------------------------------------------------------------
// 2. Auth and the API client
// ---------------------------------------------------------------------------
//
// The page is open; the APIs are not (when the server has keys). A call that answers
// 401 opens the token dialog once (concurrent callers share it), then is retried with
// the token. The token is kept in sessionStorage: gone when the tab closes, never sent
// anywhere but this server's APIs.

const TOKEN_KEY = "keel.token";

const auth = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  /** The open dialog's promise (resolves to true when a token was entered). */
  asking: null,
  /** Set after the user cancelled: calls fail quietly until they sign in again. */
  declined: false,

  set(token) {
    this.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    this.declined = false;
    renderAuthState();
  },

  /** Opens the token dialog; `rejected` says the last token was refused. */
  ask(rejected) {
    if (this.asking) return this.asking;
    const dialog = $("token-dialog");
    $("token-error").hidden = !rejected;
    $("token-error").textContent = rejected ? "That token was not accepted (401). Try another." : "";
    $("token-input").value = "";
    dialog.returnValue = "";
    this.asking = new Promise((resolve) => {
      const done = (ok) => {
        dialog.removeEventListener("close", onClose);
        this.asking = null;
        resolve(ok);
      };
      const onClose = () => {
        const v = $("token-input").value.trim();
        if (dialog.returnValue === "ok" && v) {
          this.set(v);
          done(true);
        } else {
          this.declined = true;
          showBanner("Not signed in: the APIs need a token. Use “Enter token” to sign in.");
          done(false);
        }
      };
      dialog.addEventListener("close", onClose);
      dialog.showModal();
      $("token-input").focus();
    });
    return this.asking;
  },
};

function renderAuthState() {
  $("auth-state").textContent = auth.token ? "token set (this tab only)" : "not signed in";
  $("sign-out").hidden = !auth.token;
  $("sign-in").hidden = !!auth.token;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * fetch() against this server with the bearer token; on 401 asks for a token and
 * retries. Returns the Response of any other status (callers check `ok`).
 */
async function apiFetch(path, init = {}) {
  for (let attempt = 0; ; attempt++) {
    const used = auth.token;
    const headers = new Headers(init.headers || {});
    if (used) headers.set("Authorization", "Bearer " + used);
    const r = await fetch(path, { ...init, headers });
    if (r.status !== 401) {
      if (used) showBanner("");
      return r;
    }
    if (attempt >= 3) throw new ApiError(401, "not signed in (401)");
    // Someone signed in while this call was on its way: retry with the new token.
    if (auth.token && auth.token !== used) continue;
    if (auth.declined) throw new ApiError(401, "not signed in (401)");
    if (used) auth.set(""); // refused: forget it
    const ok = await auth.ask(!!used);
    if (!ok) throw new ApiError(401, "not signed in (401)");
  }
}

/** The error message of a non-2xx answer (Databricks or OpenAI shape, or the text). */
async function errorMessage(r) {
  const text = await r.text();
  try {
    const j = JSON.parse(text);
    return (j.error && j.error.message) || j.message || text;
  } catch {
    return text || r.statusText;
  }
}

/** GET → parsed JSON, or throws ApiError. */
async function apiJson(path) {
  const r = await apiFetch(path);
  if (!r.ok) throw new ApiError(r.status, `${r.status}: ${await errorMessage(r)}`);
  return r.json();
}

// ---------------------------------------------------------------------------
// 3. Tabs (the URL hash names the tab, so each can be linked to)
// ---------------------------------------------------------------------------

const TABS = ["endpoints", "metrics", "monitoring", "playground"];
const tabHooks = {}; // tab name → function called when it is shown

function currentTab() {
  const t = location.hash.replace(/^#/, "");
  return TABS.includes(t) ? t : "endpoints";
}

function showTab() {
  const t = currentTab();
  for (const name of TABS) {
    $("tab-" + name).hidden = name !== t;
  }
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.tab === t);
  }
  document.body.dataset.tab = t;
  if (tabHooks[t]) tabHooks[t]();
}

// ---------------------------------------------------------------------------
// 4. Endpoints tab
// ---------------------------------------------------------------------------

/** Registry aliases by model name, fetched once per model per page load. */
const aliasCache = new Map();

/** The registry model behind an entity, when it is registry-backed. */
function registryModelName(entity) {
  if (entity.resolved_version === undefined) return null;
  const n = entity.entity_name || "";
  if (n.startsWith("models:/")) return n.slice("models:/".length).split(/[@/]/)[0];
  return n;
}

async function aliasesOf(model) {
  if (!aliasCache.has(model)) {
    const p = apiJson("/api/2.0/mlflow/registered-models/get?name=" + encodeURIComponent(model))
      .then((j) => (j.registered_model && j.registered_model.aliases) || [])
      .catch(() => null);
    aliasCache.set(model, p);
  }
  return aliasCache.get(model);
}

function stateBadge(text) {
  const good = ["READY", "NOT_UPDATING", "DEPLOYMENT_READY"];
  const bad = ["NOT_READY", "UPDATE_FAILED", "DEPLOYMENT_FAILED"];
  const cls = good.includes(text) ? "ok" : bad.includes(text) ? "bad" : "warn";
  return el("span", { class: "badge " + cls }, text || "–");
}

function renderEntities(ep) {
  const cfg = ep.config || {};
  const routes = (cfg.traffic_config && cfg.traffic_config.routes) || [];
  const traffic = new Map(routes.map((r) => [r.served_entity_name, r.traffic_percentage]));
  const rows = (cfg.served_entities || []).map((e) => {
    const st = (e.state && e.state.deployment) || "";
    const aliasCell = el("td", { class: "aliases" }, "–");
    const model = registryModelName(e);
    if (model) {
      aliasesOf(model).then((aliases) => {
        if (!aliases) return;
        aliasCell.textContent = aliases.length
          ? aliases.map((a) => `@${a.alias} → v${a.version}`).join(", ")
          : "none";
      });
    }
    const pct = traffic.get(e.name) ?? 0;
    return el(
      "tr",
      { "data-entity": e.name },
      el("td", {}, el("strong", {}, e.name)),
      el("td", {}, e.entity_name),
      el("td", {}, e.entity_version ?? "–"),
      el("td", {}, e.resolved_version ?? "–"),
      aliasCell,
      el("td", {}, stateBadge(st), e.state && e.state.deployment_state_message
        ? el("div", { class: "error small-print" }, e.state.deployment_state_message) : null),
      el("td", { class: "num" }, e.max_concurrency),
      el("td", {}, e.scale_to_zero_enabled ? `yes (${e.scale_to_zero_idle_seconds} s idle)` : "no"),
      el("td", {}, el("div", { class: "traffic" }, el("meter", { min: 0, max: 100, value: pct }), ` ${pct}%`)),
    );
  });
  return el(
    "table",
    { class: "grid" },
    el("thead", {}, el("tr", {}, ["name", "entity_name", "entity_version", "resolved_version", "aliases",
      "state", "max_concurrency", "scale to zero", "traffic"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows),
  );
}

function renderEndpoint(ep) {
  const st = ep.state || {};
  const cfg = ep.config || {};
  const capture = cfg.auto_capture_config;
  const limits = (ep.rate_limits || []).map((r) => `${r.calls}/${r.renewal_period || "minute"} per ${r.key}`);
  const tags = (ep.tags || []).map((t) => `${t.key}=${t.value ?? ""}`);
  return el(
    "article",
    { class: "card endpoint", "data-endpoint": ep.name },
    el("header", {},
      el("h3", {}, ep.name),
      stateBadge(st.ready),
      el("span", { class: "muted" }, "config_update "), stateBadge(st.config_update),
      el("span", { class: "muted" }, ` config v${cfg.config_version ?? "?"} · ${ep.task || ""}`)),
    st.config_update_message ? el("p", { class: "error" }, st.config_update_message) : null,
    renderEntities(ep),
    el("dl", { class: "facts" },
      el("div", {}, el("dt", {}, "rate limits"), el("dd", {}, limits.join(", ") || "none")),
      el("div", {}, el("dt", {}, "tags"), el("dd", {}, tags.join(", ") || "none")),
      el("div", {}, el("dt", {}, "inference table"),
        el("dd", {}, capture && capture.enabled ? `${capture.table_name_prefix || ep.name}_payload` : "off")),
      el("div", {}, el("dt", {}, "updated"),
        el("dd", {}, new Date(ep.last_updated_timestamp || 0).toLocaleString()))),
    ep.pending_config ? el("p", { class: "muted" }, "A config update is loading: traffic switches when its entities are ready.") : null,
  );
}

let endpointsTimer = null;

async function refreshEndpoints() {
  const box = $("endpoints-list");
  try {
    const j = await apiJson("/api/2.0/serving-endpoints");
    const eps = j.endpoints || [];
    box.replaceChildren(...(eps.length ? eps.map(renderEndpoint) : [el("p", { class: "muted" }, "No endpoints.")]));
    box.dataset.count = String(eps.length);
    $("endpoints-updated").textContent = "updated " + new Date().toLocaleTimeString();
    updateMetricsEndpointFilter(eps.map((e) => e.name));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, "Cannot list endpoints: " + e.message));
  }
}

tabHooks.endpoints = () => {
  refreshEndpoints();
  clearInterval(endpointsTimer);
  endpointsTimer = setInterval(() => {
    if (currentTab() === "endpoints") refreshEndpoints();
    else clearInterval(endpointsTimer);
  }, 5000);
};

// ---------------------------------------------------------------------------
// 5. Prometheus text parsing and histogram quantiles
// ---------------------------------------------------------------------------

/** Parses Prometheus / OpenMetrics text into [{name, labels, value}] (comments skipped). */
function parsePrometheus(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    let i = 0;
    while (i < line.length && line[i] !== "{" && line[i] !== " ") i++;
    const name = line.slice(0, i);
    const labels = {};
    if (line[i] === "{") {
      i++;
      while (i < line.length && line[i] !== "}") {
        const eq = line.indexOf("=", i);
        if (eq < 0) break;
        const key = line.slice(i, eq).trim();
        i = eq + 2; // skip `="`
        let v = "";
        while (i < line.length && line[i] !== '"') {
          if (line[i] === "\\" && i + 1 < line.length) {
            const c = line[i + 1];
            v += c === "n" ? "\n" : c;
            i += 2;
          } else {
            v += line[i++];
          }
        }
        labels[key] = v;
        i++; // closing quote
        if (line[i] === ",") i++;
      }
      i++; // closing brace
    }
    const rest = line.slice(i).trim().split(/\s+/);
    const value = Number(rest[0] === "+Inf" ? Infinity : rest[0] === "-Inf" ? -Infinity : rest[0]);
    if (name && !Number.isNaN(value)) out.push({ name, labels, value });
  }
  return out;
}

/**
 * The q-quantile of a cumulative histogram ([[le, count]...] sorted, last le = +Inf),
 * interpolated linearly inside the bucket, as Prometheus' histogram_quantile.
 * null when the histogram is empty.
 */
function histogramQuantile(q, buckets) {
  if (!buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      if (count === prevCount) return le;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / (count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

// ---------------------------------------------------------------------------
// 6. Metrics history
// ---------------------------------------------------------------------------
//
// Every second /metrics is parsed into one sample: per endpoint, the request-side
// counters and histograms and the engine gauges; plus the process' CPU and memory.
// Rates and percentiles are differences between two samples, computed when charts draw,
// so the endpoint filter applies to the whole 5 minutes at once.

const POLL_MS = 1000;
const HISTORY_S = 300;
const RATE_WINDOW_S = 5;
const QUANTILE_WINDOW_S = 30;

const history = []; // [{t (ms), eps: {endpoint: EndpointSample}, cpu, rss}]

function emptyEndpointSample() {
  return {
    requests: 0, errors: 0, prompt: 0, generated: 0,
    latency: new Map(), ttft: new Map(), // le → cumulative count
    waiting: 0, running: 0, inFlight: 0, kvUsed: 0, kvTotal: 0,
  };
}

/** One sample from the parsed text. Requests not routed to an endpoint are left out. */
function toSample(series, t) {
  const eps = {};
  const ep = (labels) => {
    const name = labels.endpoint || "";
    if (!eps[name]) eps[name] = emptyEndpointSample();
    return eps[name];
  };
  const addBucket = (m, le, v) => m.set(le, (m.get(le) || 0) + v);
  const s = { t, eps, cpu: null, rss: null, unrouted: 0 };
  for (const { name, labels, value } of series) {
    switch (name) {
      case "keel_requests_total": {
        const failed = !/^2/.test(labels.status || "");
        if (!labels.endpoint) {
          // Answered before reaching an endpoint: /metrics and /dashboard themselves
          // (not counted as requests), and errors such as 401, a bad body, an unknown model.
          if (failed) s.unrouted += value;
          break;
        }
        const e = ep(labels);
        e.requests += value;
        if (failed) e.errors += value;
        break;
      }
      case "keel_request_duration_seconds_bucket":
        addBucket(ep(labels).latency, labels.le === "+Inf" ? Infinity : Number(labels.le), value);
        break;
      case "keel_time_to_first_token_seconds_bucket":
        addBucket(ep(labels).ttft, labels.le === "+Inf" ? Infinity : Number(labels.le), value);
        break;
      case "keel_prompt_tokens_total": ep(labels).prompt += value; break;
      case "keel_generation_tokens_total": ep(labels).generated += value; break;
      case "keel_num_requests_waiting": ep(labels).waiting += value; break;
      case "keel_num_requests_running": ep(labels).running += value; break;
      case "keel_num_requests_in_flight": ep(labels).inFlight += value; break;
      case "keel_kv_cache_blocks_used": ep(labels).kvUsed += value; break;
      case "keel_kv_cache_blocks_total": ep(labels).kvTotal += value; break;
      case "keel_process_cpu_seconds_total":
      case "keel_process_cpu_seconds": s.cpu = value; break;
      case "keel_process_resident_memory_bytes": s.rss = value; break;
      default: break;
    }
  }
  return s;
}

/** The sample's endpoints summed (all of them, or the one `filter` names). */
function aggregate(sample, filter) {
  const a = emptyEndpointSample();
  for (const [name, e] of Object.entries(sample.eps)) {
    if (filter && name !== filter) continue;
    for (const k of ["requests", "errors", "prompt", "generated", "waiting", "running", "inFlight", "kvUsed", "kvTotal"]) {
      a[k] += e[k];
    }
    for (const [le, v] of e.latency) a.latency.set(le, (a.latency.get(le) || 0) + v);
    for (const [le, v] of e.ttft) a.ttft.set(le, (a.ttft.get(le) || 0) + v);
  }
  return a;
}

/** Counter increase from a to b; a reset (server restart) counts from zero. */
function increase(a, b) {
  return b >= a ? b - a : b;
}

/** Buckets of b minus a, sorted by le, as [[le, count]...]. */
function bucketDelta(a, b) {
  const out = [];
  for (const le of [...b.keys()].sort((x, y) => x - y)) {
    out.push([le, increase(a.get(le) || 0, b.get(le))]);
  }
  return out;
}

/** The latest sample at least `seconds` older than history[i] (or the oldest). */
function sampleBefore(i, seconds) {
  const t = history[i].t - seconds * 1000;
  let j = i - 1;
  while (j > 0 && history[j].t > t) j--;
  return j >= 0 ? j : null;
}

/** Derived series for the charts: {key: [[t, value|null]...]}. */
function derive(filter) {
  const d = {
    req: [], err: [], unrouted: [], p50: [], p99: [], ttft50: [], ttft99: [], gen: [], prompt: [],
    waiting: [], running: [], inFlight: [], kvUsed: [], kvTotal: [], cpu: [], rss: [],
  };
  const aggs = history.map((s) => aggregate(s, filter));
  for (let i = 0; i < history.length; i++) {
    const t = history[i].t;
    const b = aggs[i];
    d.waiting.push([t, b.waiting]);
    d.running.push([t, b.running]);
    d.inFlight.push([t, b.inFlight]);
    d.kvUsed.push([t, b.kvUsed]);
    d.kvTotal.push([t, b.kvTotal]);
    d.rss.push([t, history[i].rss === null ? null : history[i].rss / 2 ** 20]);
    const j = sampleBefore(i, RATE_WINDOW_S);
    if (j === null) {
      for (const k of ["req", "err", "unrouted", "gen", "prompt", "cpu"]) d[k].push([t, null]);
    } else {
      const a = aggs[j];
      const dt = (t - history[j].t) / 1000;
      d.req.push([t, increase(a.requests, b.requests) / dt]);
      d.err.push([t, increase(a.errors, b.errors) / dt]);
      // Not attributable to an endpoint: shown only for "all endpoints".
      d.unrouted.push([t, filter ? null : increase(history[j].unrouted, history[i].unrouted) / dt]);
      d.gen.push([t, increase(a.generated, b.generated) / dt]);
      d.prompt.push([t, increase(a.prompt, b.prompt) / dt]);
      const c0 = history[j].cpu;
      const c1 = history[i].cpu;
      d.cpu.push([t, c0 === null || c1 === null ? null : (100 * increase(c0, c1)) / dt]);
    }
    const q = sampleBefore(i, QUANTILE_WINDOW_S);
    if (q === null) {
      for (const k of ["p50", "p99", "ttft50", "ttft99"]) d[k].push([t, null]);
    } else {
      const lat = bucketDelta(aggs[q].latency, b.latency);
      const ttft = bucketDelta(aggs[q].ttft, b.ttft);
      const ms = (v) => (v === null ? null : v * 1000);
      d.p50.push([t, ms(histogramQuantile(0.5, lat))]);
      d.p99.push([t, ms(histogramQuantile(0.99, lat))]);
      d.ttft50.push([t, ms(histogramQuantile(0.5, ttft))]);
      d.ttft99.push([t, ms(histogramQuantile(0.99, ttft))]);
    }
  }
  return d;
}

let pollFailures = 0;

async function pollMetrics() {
  try {
    const r = await apiFetch("/metrics");
    if (!r.ok) throw new ApiError(r.status, `${r.status}: ${await errorMessage(r)}`);
    const now = Date.now();
    history.push(toSample(parsePrometheus(await r.text()), now));
    while (history.length && history[0].t < now - HISTORY_S * 1000) history.shift();
    pollFailures = 0;
    for (const name of Object.keys(history[history.length - 1].eps)) knownEndpoints.add(name);
    $("metrics-updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    if (currentTab() === "metrics") renderMetrics();
  } catch (e) {
    pollFailures++;
    $("metrics-updated").textContent = "cannot read /metrics: " + e.message;
  }
  // Back off while signed out or failing; never more than one poll in flight.
  const delay = auth.declined ? 5000 : POLL_MS * Math.min(2 ** pollFailures, 10);
  setTimeout(pollMetrics, delay);
}

// ---------------------------------------------------------------------------
// 7. SVG line charts
// ---------------------------------------------------------------------------
//
// A chart is an <svg> redrawn from scratch each second: x is the last 5 minutes, y starts
// at 0 and ends at a round number above the largest value. A null value breaks the line.
// The figure carries data-samples (points with a value, all lines) and data-max, and each
// line's <path> its own data-max, which tests and curious users can read.

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];
const W = 560;
const H = 170;
const PAD = { l: 44, r: 10, t: 10, b: 22 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= v) return m * p; // quarters stay round
  return 10 * p;
}

/**
 * Draws `lines` ([{label, points: [[t, v]...], dashed?}]) into `fig` (a <figure>),
 * with `unit` after the values in the legend.
 */
function drawChart(fig, title, unit, lines) {
  const now = Date.now();
  const t0 = now - HISTORY_S * 1000;
  let max = 0;
  let samples = 0;
  for (const l of lines) {
    for (const [, v] of l.points) {
      if (v === null || !Number.isFinite(v)) continue;
      samples++;
      if (v > max) max = v;
    }
  }
  const top = niceMax(max);
  const x = (t) => PAD.l + ((t - t0) / (HISTORY_S * 1000)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / top) * (H - PAD.t - PAD.b);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  // Grid: 4 horizontal lines with values, a tick per minute.
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: PAD.l - 4, y: y(v) + 3, class: "axis", "text-anchor": "end" }, fmtNumber(v)));
  }
  for (let m = 0; m <= 5; m++) {
    const t = now - m * 60000;
    root.append(svg("text", { x: x(t), y: H - 6, class: "axis", "text-anchor": m === 0 ? "end" : "middle" },
      m === 0 ? "now" : `-${m}m`));
  }
  lines.forEach((l, n) => {
    let d = "";
    let pen = false;
    let lineMax = 0;
    for (const [t, v] of l.points) {
      if (t < t0 || v === null || !Number.isFinite(v)) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      lineMax = Math.max(lineMax, v);
    }
    if (d) {
      root.append(svg("path", {
        d, fill: "none", stroke: COLORS[n % COLORS.length], "stroke-width": 1.8,
        "stroke-dasharray": l.dashed ? "5 4" : null, "data-series": l.label, "data-max": lineMax,
      }));
    }
  });
  const legend = el("figcaption", {},
    el("strong", {}, title),
    lines.map((l, n) => {
      const last = [...l.points].reverse().find(([, v]) => v !== null && Number.isFinite(v));
      const swatch = el("span", { class: `swatch c${n % COLORS.length}` });
      return el("span", { class: "legend" }, swatch, `${l.label} `,
        el("b", {}, last ? fmtNumber(last[1]) + (unit ? " " + unit : "") : "–"));
    }));
  fig.replaceChildren(legend, root);
  fig.dataset.samples = String(samples);
  fig.dataset.max = String(max);
}

// ---------------------------------------------------------------------------
// 8. Live metrics tab
// ---------------------------------------------------------------------------

/** The charts, in order: id, title, unit, and the derived series they draw. */
const CHARTS = [
  { id: "requests", title: "Requests", unit: "/s",
    lines: [["requests/s", "req"], ["errors/s (non-2xx)", "err"], ["other errors/s (before routing)", "unrouted"]] },
  { id: "latency", title: "Latency (end to end)", unit: "ms", lines: [["p50", "p50"], ["p99", "p99"]] },
  { id: "ttft", title: "Time to first token", unit: "ms", lines: [["p50", "ttft50"], ["p99", "ttft99"]] },
  { id: "tokens", title: "Tokens", unit: "/s", lines: [["generated/s", "gen"], ["prompt/s", "prompt"]] },
  { id: "queue", title: "Requests in the engine", unit: "", lines: [["waiting (queue)", "waiting"], ["running", "running"], ["in flight (HTTP)", "inFlight"]] },
  { id: "kv", title: "KV cache blocks", unit: "", lines: [["used", "kvUsed"], ["total", "kvTotal", true]] },
  { id: "cpu", title: "Process CPU", unit: "%", lines: [["CPU (100% = one core)", "cpu"]] },
  { id: "memory", title: "Process memory", unit: "MiB", lines: [["resident", "rss"]] },
];

const knownEndpoints = new Set();

function updateMetricsEndpointFilter(names) {
  for (const n of names) knownEndpoints.add(n);
  const sel = $("metrics-endpoint");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const n of [...knownEndpoints].filter(Boolean).sort()) {
    if (!have.has(n)) sel.append(el("option", { value: n }, n));
  }
}

function buildCharts() {
  const box = $("charts");
  box.replaceChildren(...CHARTS.map((c) => el("figure", { class: "card chart-card", id: "chart-" + c.id, "data-samples": 0 })));
}

function renderMetrics() {
  updateMetricsEndpointFilter([]);
  const d = derive($("metrics-endpoint").value);
  for (const c of CHARTS) {
    const lines = c.lines.map(([label, key, dashed]) => ({ label, points: d[key], dashed }));
    drawChart($("chart-" + c.id), c.title, c.unit, lines);
  }
  const last = (k) => {
    const p = d[k].length ? d[k][d[k].length - 1][1] : null;
    return p;
  };
  const kvPct = last("kvTotal") > 0 ? (100 * last("kvUsed")) / last("kvTotal") : null;
  const stat = (label, value, id) => el("div", { class: "stat", id }, el("span", {}, label), el("b", {}, value));
  $("metrics-stats").replaceChildren(
    stat("requests/s", fmtNumber(last("req")), "stat-req"),
    stat("errors/s", fmtNumber(last("err")), "stat-err"),
    stat("latency p50", fmtMs(last("p50")), "stat-latency-p50"),
    stat("latency p99", fmtMs(last("p99")), "stat-latency-p99"),
    stat("TTFT p50", fmtMs(last("ttft50")), "stat-ttft"),
    stat("tokens/s", fmtNumber(last("gen")), "stat-tokens"),
    stat("queue", fmtNumber(last("waiting")), "stat-queue"),
    stat("running", fmtNumber(last("running")), "stat-running"),
    stat("KV cache", kvPct === null ? "–" : `${kvPct.toFixed(1)}%`, "stat-kv"),
    stat("CPU", last("cpu") === null ? "–" : `${fmtNumber(last("cpu"))}%`, "stat-cpu"),
    stat("memory", last("rss") === null ? "–" : `${fmtNumber(last("rss"))} MiB`, "stat-mem"),
  );
}

tabHooks.metrics = renderMetrics;

// ---------------------------------------------------------------------------
// 9. Monitoring tab
// ---------------------------------------------------------------------------
//
// The route lists the inference tables on disk with the latest windows of the profile
// metrics and the latest drift rows that `runtime monitor profile` / `drift` computed
// (SPEC §6.1–6.2). A table without metrics shows the command that computes them.
// Nothing here is made up: every figure is a value of those tables.

/** js_distance above which a drift cell is marked (the README's example rule). */
const DRIFT_THRESHOLD = 0.2;

function fmtUtc(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
}

function captureTable(endpoints) {
  if (!endpoints || !endpoints.length) return null;
  return el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, el("th", {}, "endpoint"), el("th", {}, "auto_capture_config"))),
    el("tbody", {}, endpoints.map((e) => el("tr", {}, el("td", {}, e.name),
      el("td", {}, e.auto_capture_config && e.auto_capture_config.enabled
        ? `enabled (${e.auto_capture_config.table_name_prefix || e.name}_payload` +
          (e.auto_capture_config.sampling_fraction ? `, sampling ${e.auto_capture_config.sampling_fraction}` : "") + ")"
        : "off")))));
}

function commandHint(what, cmd) {
  return el("p", { class: "muted hint" }, what + " not computed yet: ", el("code", {}, cmd));
}

function profileSection(t, granularity) {
  const p = t.profile;
  if (!p) return commandHint("Profile metrics", `runtime monitor profile --table ${t.name} --granularity "1 hour"`);
  const rows = p.windows.filter((w) => w.granularity === granularity);
  return el("div", { class: "profile" },
    el("h4", {}, `Latest windows (${granularity}, UTC)`),
    el("table", { class: "grid profile-windows" },
      el("thead", {}, el("tr", {}, ["window", "model", "requests", "errors %", "latency p50", "latency avg",
        "TTFT p50", "prompt tok", "compl. tok", "FK grade", "perplexity p50"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((w) => el("tr", { "data-window-start": w.start_ms, "data-model": w.model_id },
        el("td", {}, w.model_id === ":all" ? fmtUtc(w.start_ms) : ""),
        el("td", {}, w.model_id === ":all" ? "all models" : w.model_id),
        el("td", { class: "num requests" }, String(w.requests)),
        el("td", { class: "num" }, fmtNumber(w.error_percent)),
        el("td", { class: "num" }, fmtMs(w.latency_p50_ms)),
        el("td", { class: "num" }, fmtMs(w.latency_avg_ms)),
        el("td", { class: "num" }, fmtMs(w.ttft_p50_ms)),
        el("td", { class: "num" }, fmtNumber(w.prompt_tokens_avg)),
        el("td", { class: "num" }, fmtNumber(w.completion_tokens_avg)),
        el("td", { class: "num" }, fmtNumber(w.fk_grade_avg)),
        el("td", { class: "num" }, fmtNumber(w.perplexity_p50)))))));
}

function driftSection(t, granularity) {
  const d = t.drift;
  if (!d) return commandHint("Drift metrics", `runtime monitor drift --table ${t.name} --granularity "1 hour"`);
  const rows = d.rows.filter((r) => r.granularity === granularity);
  if (!rows.length) return el("p", { class: "muted hint" }, `No drift rows at ${granularity} yet (CONSECUTIVE drift needs two windows with rows).`);
  const types = [...new Set(rows.map((r) => r.drift_type))];
  return el("div", { class: "drift" }, types.map((dt) => {
    const rs = rows.filter((r) => r.drift_type === dt);
    const against = rs[0].cmp_start_ms === null || rs[0].cmp_start_ms === undefined ? "the baseline" : "window " + fmtUtc(rs[0].cmp_start_ms);
    return el("div", { class: "drift-group", "data-drift-type": dt },
      el("h4", {}, `${dt} drift of window ${fmtUtc(rs[0].start_ms)} against ${against} (all models)`),
      el("table", { class: "grid drift-rows" },
        el("thead", {}, el("tr", {}, ["column", "JS distance", "PSI", "KS statistic", "KS p-value", "χ² p-value", "avg Δ"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rs.map((r) => el("tr", { "data-column": r.column },
          el("td", {}, r.column),
          el("td", { class: "num" + (r.js_distance > DRIFT_THRESHOLD ? " drift-high" : "") }, fmtNumber(r.js_distance, 3)),
          el("td", { class: "num" }, fmtNumber(r.population_stability_index)),
          el("td", { class: "num" }, fmtNumber(r.ks_statistic)),
          el("td", { class: "num" }, r.ks_pvalue === null || r.ks_pvalue === undefined ? "–" : r.ks_pvalue.toExponential(1)),
          el("td", { class: "num" }, r.chi_squared_pvalue === null || r.chi_squared_pvalue === undefined ? "–" : r.chi_squared_pvalue.toExponential(1)),
          el("td", { class: "num" }, fmtNumber(r.avg_delta)))))));
  }), el("p", { class: "muted legend" }, el("span", { class: "drift-high" }, "marked"),
    ` cells: JS distance > ${DRIFT_THRESHOLD}. Alert from cron or CI with `,
    el("code", {}, `runtime monitor check --table ${t.name} --rule "js_distance(response_length) > ${DRIFT_THRESHOLD}"`), "."));
}

const monitorState = { granularity: {} };

function tableCard(t) {
  const grans = (t.profile && t.profile.granularities) || [...new Set(((t.drift && t.drift.rows) || []).map((r) => r.granularity))];
  let g = monitorState.granularity[t.name];
  if (!grans.includes(g)) g = grans[0];
  monitorState.granularity[t.name] = g;
  const body = el("div", { class: "table-metrics" });
  const render = () => body.replaceChildren(profileSection(t, g), driftSection(t, g));
  const picker = grans.length > 1 ? el("select", { class: "granularity", "aria-label": "granularity" },
    grans.map((x) => el("option", { value: x, selected: x === g }, x))) : null;
  if (picker) picker.addEventListener("change", () => { g = picker.value; monitorState.granularity[t.name] = g; render(); });
  render();
  return el("article", { class: "card monitor-table", "data-table": t.name },
    el("header", {}, el("h3", {}, t.name), picker,
      el("span", { class: "muted" },
        `${fmtNumber(t.rows)} rows in ${t.parts} part(s); last request ${fmtUtc(t.last_request_ms)} UTC; ` +
        (t.endpoints && t.endpoints.length ? "written by " + t.endpoints.join(", ") : "no endpoint of this server writes it"))),
    t.error ? el("p", { class: "error" }, t.error) : null,
    body);
}

async function refreshMonitoring() {
  const box = $("monitoring-body");
  let j = null;
  try {
    j = await apiJson("/api/2.0/keel/monitoring");
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, "Cannot read monitoring status: " + e.message));
    return;
  }
  const tables = (j && j.tables) || [];
  box.dataset.tables = String(tables.length);
  if (!tables.length) {
    box.replaceChildren(el("div", { class: "card empty", id: "monitoring-empty" },
      el("h3", {}, "No inference tables yet"),
      el("p", {}, j.message || ""),
      el("p", {}, "Enable ", el("code", {}, "auto_capture_config"),
        " on an endpoint (each request is then logged to ", el("code", {}, "<prefix>_payload"),
        "), then compute metrics with ", el("code", {}, "runtime monitor profile"), " and ",
        el("code", {}, "runtime monitor drift"), ". They show here."),
      captureTable(j.endpoints)));
    return;
  }
  box.replaceChildren(...tables.map(tableCard),
    el("div", { class: "card" }, el("h3", {}, "Capture"), captureTable(j.endpoints)));
}

tabHooks.monitoring = refreshMonitoring;

// ---------------------------------------------------------------------------
// 10. Playground
// ---------------------------------------------------------------------------

const pg = { controller: null, modelsLoaded: false };

/** The request body for the current inputs (what is sent, and what the snippets show). */
function playgroundBody() {
  const mode = $("pg-mode").value;
  const body = { model: $("pg-model").value || undefined };
  const prompt = $("pg-prompt").value;
  if (mode === "chat") body.messages = [{ role: "user", content: prompt }];
  else body.prompt = prompt;
  const maxTokens = parseInt($("pg-max-tokens").value, 10);
  if (Number.isFinite(maxTokens)) body.max_tokens = maxTokens;
  const temperature = parseFloat($("pg-temperature").value);
  if (Number.isFinite(temperature)) body.temperature = temperature;
  body.stream = true;
  body.stream_options = { include_usage: true };
  return body;
}

function playgroundPath() {
  return $("pg-mode").value === "chat" ? "/v1/chat/completions" : "/v1/completions";
}

/** A shell single-quoted string. */
function shellQuote(s) {
  return "'" + s.replace(/'/g, "'\\''") + "'";
}

/** A Python literal for a JSON value (JSON strings are valid Python strings). */
function py(v) {
  if (v === true) return "True";
  if (v === false) return "False";
  if (v === null || v === undefined) return "None";
  if (Array.isArray(v)) return "[" + v.map(py).join(", ") + "]";
  if (typeof v === "object") return "{" + Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${py(x)}`).join(", ") + "}";
  return JSON.stringify(v);
}

/** JSON with one top-level key per line, values compact (readable in a snippet). */
function jsonOneKeyPerLine(obj) {
  const lines = Object.entries(obj)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`);
  return "{\n" + lines.join(",\n") + "\n}";
}

function renderSnippets() {
  const body = playgroundBody();
  const base = location.origin;
  $("pg-curl").textContent = [
    `curl -N ${base}${playgroundPath()} \\`,
    `  -H "Authorization: Bearer $KEEL_TOKEN" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(jsonOneKeyPerLine(body))}`,
  ].join("\n");
  const chat = $("pg-mode").value === "chat";
  const args = [`    model=${py(body.model || "default")},`];
  if (chat) args.push(`    messages=${py(body.messages)},`);
  else args.push(`    prompt=${py(body.prompt)},`);
  if (body.max_tokens !== undefined) args.push(`    max_tokens=${py(body.max_tokens)},`);
  if (body.temperature !== undefined) args.push(`    temperature=${py(body.temperature)},`);
  args.push("    stream=True,", '    stream_options={"include_usage": True},');
  $("pg-python").textContent = [
    "import os",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${py(base + "/v1")}, api_key=os.environ.get("KEEL_TOKEN", "none"))`,
    `stream = client.${chat ? "chat.completions" : "completions"}.create(`,
    ...args,
    ")",
    "for chunk in stream:",
    "    if chunk.choices:",
    `        print(chunk.choices[0].${chat ? "delta.content" : "text"} or "", end="", flush=True)`,
    "    if chunk.usage:",
    "        print()",
    "        print(chunk.usage)",
  ].join("\n");
}

async function loadModels() {
  const sel = $("pg-model");
  try {
    const j = await apiJson("/v1/models");
    const keep = sel.value;
    const opts = (j.data || []).map((m) =>
      el("option", { value: m.id }, m.parent ? `${m.id} (entity of ${m.parent})` : `${m.id} (endpoint)`));
    sel.replaceChildren(...opts);
    if (keep && [...sel.options].some((o) => o.value === keep)) sel.value = keep;
    pg.modelsLoaded = true;
    renderSnippets();
  } catch (e) {
    setPgStatus("error", "Cannot list models: " + e.message);
  }
}

function setPgStatus(state, text) {
  $("pg-result").dataset.state = state;
  $("pg-status").textContent = text;
  $("pg-status").classList.toggle("error", state === "error");
}

function resetPgStats() {
  for (const id of ["pg-ttft", "pg-total", "pg-tps", "pg-prompt-tokens", "pg-completion-tokens", "pg-finish", "pg-served"]) {
    $(id).textContent = "–";
  }
}

/**
 * Reads an SSE body, calling onData(json) for each `data:` line until `data: [DONE]`.
 * Returns true when [DONE] was seen.
 */
async function readSse(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") {
        reader.cancel().catch(() => {});
        return true;
      }
      try {
        onData(JSON.parse(data));
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e;
      }
    }
  }
  return false;
}

async function sendPlayground(ev) {
  ev.preventDefault();
  if (pg.controller) return;
  const body = playgroundBody();
  const out = $("pg-output");
  out.textContent = "";
  resetPgStats();
  setPgStatus("waiting", "Waiting for the first token…");
  $("pg-send").disabled = true;
  $("pg-stop").disabled = false;
  pg.controller = new AbortController();
  const started = performance.now();
  let firstAt = null;
  let usage = null;
  let finish = null;
  try {
    const r = await apiFetch(playgroundPath(), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: pg.controller.signal,
    });
    if (!r.ok) throw new ApiError(r.status, `${r.status}: ${await errorMessage(r)}`);
    $("pg-served").textContent = r.headers.get("served-model-name") || "–";
    setPgStatus("streaming", "Streaming…");
    const done = await readSse(r.body, (chunk) => {
      for (const c of chunk.choices || []) {
        const text = (c.delta && c.delta.content) ?? c.text ?? "";
        if (firstAt === null) {
          firstAt = performance.now();
          $("pg-ttft").textContent = fmtMs(firstAt - started);
        }
        if (text) out.textContent += text;
        if (c.finish_reason) finish = c.finish_reason;
      }
      if (chunk.usage) usage = chunk.usage;
    });
    const total = performance.now() - started;
    $("pg-total").textContent = fmtMs(total);
    $("pg-finish").textContent = finish || (done ? "–" : "stream cut");
    if (usage) {
      $("pg-prompt-tokens").textContent = String(usage.prompt_tokens);
      $("pg-completion-tokens").textContent = String(usage.completion_tokens);
      $("pg-tps").textContent = total > 0 ? fmtNumber((usage.completion_tokens * 1000) / total) : "–";
    }
    setPgStatus("done", done ? "Done." : "The stream ended without [DONE].");
  } catch (e) {
    if (e.name === "AbortError") setPgStatus("done", "Stopped.");
    else setPgStatus("error", e.message);
    $("pg-total").textContent = fmtMs(performance.now() - started);
  } finally {
    pg.controller = null;
    $("pg-send").disabled = false;
    $("pg-stop").disabled = true;
  }
}

function initPlayground() {
  $("pg-form").addEventListener("submit", sendPlayground);
  $("pg-stop").addEventListener("click", () => pg.controller && pg.controller.abort());
  for (const id of ["pg-model", "pg-mode", "pg-prompt", "pg-max-tokens", "pg-temperature"]) {
    $(id).addEventListener("input", renderSnippets);
  }
  for (const b of document.querySelectorAll("button.copy")) {
    b.addEventListener("click", () => {
      const text = $(b.dataset.copy).textContent;
      if (navigator.clipboard) navigator.clipboard.writeText(text).then(() => (b.textContent = "Copied"), () => {});
    });
  }
  renderSnippets();
}

tabHooks.playground = () => {
  if (!pg.modelsLoaded) loadModels();
};

// ---------------------------------------------------------------------------
// 11. Start-up
// ---------------------------------------------------------------------------

function init() {
  renderAuthState();
  $("sign-in").addEventListener("click", () => auth.ask(false).then((ok) => ok && showTab()));
  $("sign-out").addEventListener("click", () => {
    auth.set("");
    showBanner("Token forgotten. The next API call will ask for one.");
  });
  $("token-cancel").addEventListener("click", () => $("token-dialog").close("cancel"));
  $("endpoints-refresh").addEventListener("click", refreshEndpoints);
  $("metrics-endpoint").addEventListener("change", renderMetrics);
  window.addEventListener("hashchange", showTab);
  buildCharts();
  initPlayground();
  showTab();
  pollMetrics();
  apiJson("/version").then((v) => ($("version").textContent = v.version || "")).catch(() => {});
}

init();

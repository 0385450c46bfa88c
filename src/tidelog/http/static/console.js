// Tidelog web console: a small single-page app over the broker's /api/v1 (no build step, no libraries).
// Routes (location.hash): #/ overview, #/topics, #/topics/NAME, #/topics/NAME/messages, #/groups, #/groups/ID,
// #/share-groups, #/share-groups/ID, #/transactions; further sections come from their own files
// (static/<section>.js, loaded after this one by index.html), which call registerPage.
"use strict";

const API = "/api/v1";
const view = document.getElementById("view");
let timers = [];  // polling of the current page; cleared on navigation

function clearTimers() { timers.forEach(clearInterval); timers = []; }
function every(ms, fn) { fn(); timers.push(setInterval(fn, ms)); }

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const response = await fetch(API + path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${data.error_code || response.status}: ${data.message || response.statusText}`);
  return data;
}

// --- DOM helpers -------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
function table(columns, rows, opts = {}) {
  const head = h("tr", {}, columns.map(c => h("th", { class: c.num ? "num" : "" }, c.label)));
  const body = rows.map(row => h("tr", { class: opts.onRow ? "clickable" : "", onclick: opts.onRow ? () => opts.onRow(row) : null,
    "data-row": opts.key ? opts.key(row) : null },
    columns.map(c => h("td", { class: c.num ? "num" : "" }, c.render ? c.render(row) : row[c.key]))));
  return h("table", { "data-testid": opts.testid }, h("thead", {}, head), h("tbody", {}, body.length ? body :
    h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, opts.empty || "Nothing here yet."))));
}
function card(label, value, testid) { return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value", "data-testid": testid }, value)); }
function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  if (n < 10 && n > 0 && n !== Math.round(n)) return `${n.toFixed(1)} B`;
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"]; let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}
function fmtNum(n) { return n === null || n === undefined ? "-" : Math.round(n).toLocaleString("en-US"); }
function fmtLeader(id) { return id === null ? "none" : id; }
function partitionState(p) { return p.offline ? "offline" : p.under_replicated ? "under-replicated" : "ok"; }
function fmtTime(ms) { return ms < 0 ? "-" : new Date(ms).toISOString().replace("T", " ").replace("Z", ""); }
function fmtDuration(ms) {
  const s = Math.floor(ms / 1000), d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}
function delayState(d) {  // a delay topic partition's mover (GET /topics/{name}: delay)
  if (d.state === "failing" && d.failing_since_ms !== null) return `failing since ${fmtTime(d.failing_since_ms)}`;
  return { waiting: "waiting for next due", not_leader: "not led here", no_target: "no target topic" }[d.state] || d.state;
}
function errorBox(e) { return h("div", { class: "error", "data-testid": "error" }, String(e.message || e)); }
function link(href, text) { return h("a", { href }, text); }
const enc = encodeURIComponent;

// --- a line chart on a canvas --------------------------------------------------------
class Chart {
  constructor(series, formatY) {  // series: [{name, color}]
    this.series = series.map(s => ({ ...s, points: [] }));
    this.formatY = formatY || fmtNum;
    this.canvas = h("canvas", { class: "chart", "data-testid": "chart" });
    this.el = h("div", { class: "chart-wrap" }, this.canvas,
      h("div", { class: "legend" }, this.series.map(s => h("span", {}, h("i", { style: `background:${s.color}` }), s.name))));
    this.windowMs = 120000;
  }
  add(t, values) {
    this.series.forEach((s, i) => { s.points.push([t, values[i]]); while (s.points.length && s.points[0][0] < t - this.windowMs) s.points.shift(); });
    this.draw();
  }
  draw() {
    const c = this.canvas, ratio = window.devicePixelRatio || 1;
    const width = c.clientWidth || 600, height = c.clientHeight || 240;
    c.width = width * ratio; c.height = height * ratio;
    const g = c.getContext("2d"); g.scale(ratio, ratio); g.clearRect(0, 0, width, height);
    const left = 70, right = 10, top = 10, bottom = 22, plotW = width - left - right, plotH = height - top - bottom;
    const all = this.series.flatMap(s => s.points);
    const now = all.length ? Math.max(...all.map(p => p[0])) : Date.now();
    const first = all.length ? Math.min(...all.map(p => p[0])) : now;
    // The time axis grows with the history, from 20 s up to the full window.
    const span = Math.min(this.windowMs, Math.max(20000, now - first));
    const maxY = Math.max(1, ...all.map(p => p[1])) * 1.1;
    g.font = "11px system-ui, sans-serif"; g.fillStyle = "#667085"; g.strokeStyle = "#e3e6eb"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - plotH * i / 4;
      g.beginPath(); g.moveTo(left, y); g.lineTo(left + plotW, y); g.stroke();
      g.textAlign = "right"; g.fillText(this.formatY(maxY * i / 4), left - 6, y + 4);
    }
    g.textAlign = "center";
    for (let i = 0; i <= 4; i++) {
      const ago = Math.round(span * i / 4000), x = left + plotW - plotW * i / 4;
      g.fillText(ago ? `-${ago}s` : "now", x, height - 6);
    }
    for (const s of this.series) {
      if (!s.points.length) continue;
      g.strokeStyle = s.color; g.lineWidth = 2; g.setLineDash(s.dash || []); g.beginPath();
      s.points.forEach(([t, v], i) => {
        const x = left + plotW - plotW * (now - t) / span, y = top + plotH - plotH * v / maxY;
        i ? g.lineTo(x, y) : g.moveTo(x, y);
      });
      g.stroke();
      const [t, v] = s.points[s.points.length - 1];  // the latest value as a dot (visible from the first poll)
      g.fillStyle = s.color; g.beginPath();
      g.arc(left + plotW - plotW * (now - t) / span, top + plotH - plotH * v / maxY, 3, 0, 2 * Math.PI); g.fill();
    }
    g.setLineDash([]);
  }
}

// A broker's event-loop lag (GET /cluster's event_loop, from server/loop_monitor.py): red from 100 ms on,
// or "?" with the reason when the broker did not answer.
function fmtMs(ms) { return ms === null || ms === undefined ? "-" : ms < 10 ? `${ms.toFixed(1)} ms` : ms < 10000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`; }
function loopLag(b, field) {
  const testid = `loop-${field.replace("_ms", "")}-${b.node_id}`;
  if (!b.event_loop) return h("span", { class: "bad-text", title: b.event_loop_error || "", "data-testid": testid }, "?");
  const ms = b.event_loop[field];
  return h("span", { class: ms >= 100 ? "bad-text" : "", "data-testid": testid,
    title: `over the last ${b.event_loop.window_s} s (${b.event_loop.samples} samples); largest since the start ${fmtMs(b.event_loop.max_since_start_ms)}` }, fmtMs(ms));
}
function loopStalls(b) {
  const l = b.event_loop, testid = `loop-stalls-${b.node_id}`;
  if (!l) return h("span", { class: "bad-text", title: b.event_loop_error || "", "data-testid": testid }, "?");
  return h("span", { class: l.stalls ? "bad-text" : "", "data-testid": testid,
    title: `lags of ${fmtMs(l.stall_threshold_ms)} or more; each is a WARNING in the broker's log` }, `${l.stalls} / ${l.stalls_since_start}`);
}

// Internal writes (offset commits, SyncGroup, transaction markers and state, share state, dead letters,
// delay movers) answered REQUEST_TIMED_OUT since the broker's start (tidelog_internal_write_timeouts_total):
// red when any, the writers in the title; "?" when the broker did not answer.
function writeTimeouts(b) {
  const w = b.internal_write_timeouts, testid = `write-timeouts-${b.node_id}`;
  if (!w) return h("span", { class: "bad-text", title: b.event_loop_error || "", "data-testid": testid }, "?");
  const total = Object.values(w).reduce((a, n) => a + n, 0);
  return h("span", { class: total ? "bad-text" : "", "data-testid": testid,
    title: total ? Object.entries(w).map(([k, n]) => `${k}: ${fmtNum(n)}`).join(", ") + " (a stuck or slow disk, or an ISR that did not follow)"
                 : "no internal write timed out since the start" }, fmtNum(total));
}

// --- pages -------------------------------------------------------------------------
let throughputChart = null, lastTotals = null;  // kept across visits so the chart has history

async function overview() {
  const cards = h("div", { class: "cards", "data-testid": "overview-cards" });
  const brokers = h("div");
  const rates = h("div", { class: "cards" });
  if (!throughputChart) throughputChart = new Chart([{ name: "produced B/s", color: "#0f6bdc" }, { name: "fetched B/s", color: "#e8590c", dash: [6, 4] }], fmtBytes);
  const recordsLine = h("div", { class: "muted", "data-testid": "rates" });
  view.replaceChildren(h("h1", {}, "Cluster overview"), cards, h("h2", {}, "Brokers"), brokers,
    h("h2", {}, "Throughput now (this broker)"), h("div", { class: "panel" }, rates, recordsLine, throughputChart.el));
  every(1000, async () => {
    try {
      const c = await api("GET", "/cluster");
      const me = c.brokers.find(b => b.node_id === c.node_id);
      const health = (n, testid) => h("span", { class: n ? "bad-text" : "ok-text", "data-testid": testid }, fmtNum(n));
      cards.replaceChildren(
        card("Cluster id", c.cluster_id, "cluster-id"),
        card("This broker", me ? `#${me.node_id} ${me.host}:${me.port}` : `#${c.node_id}`, "broker"),
        card("Controller", c.controller_id === null ? "none" : `#${c.controller_id}`, "controller"),
        card("Brokers", c.brokers.length, "broker-count"), card("Topics", c.topics, "topic-count"), card("Partitions", c.partitions, "partition-count"),
        card("Under-replicated", health(c.under_replicated_partitions, "under-replicated")),
        card("Offline partitions", health(c.offline_partitions, "offline")), card("Consumer groups", c.groups ?? "-", "group-count"),
        card("Connections", c.connections), card("Uptime", fmtDuration(c.uptime_ms)), card("Version", c.version));
      brokers.replaceChildren(table([
        { label: "Broker", render: b => `#${b.node_id}` + (b.node_id === c.node_id ? " (this one)" : "") },
        { label: "Kafka address", render: b => `${b.host}:${b.port}` }, { label: "Rack", render: b => b.rack || "-" },
        { label: "Controller", render: b => b.controller ? h("span", { class: "tag" }, "controller") : "" },
        { label: "Console", render: b => b.console ? link(b.console, b.console) : "-" },
        { label: "Loop lag p99 (1 min)", num: true, render: b => loopLag(b, "p99_ms") },
        { label: "Loop lag max (1 min)", num: true, render: b => loopLag(b, "max_ms") },
        { label: "Stalls (1 min / since start)", num: true, render: loopStalls },
        { label: "Internal write timeouts", num: true, render: writeTimeouts },
      ], c.brokers, { testid: "brokers-table", key: b => b.node_id, empty: "No live broker." }));
      const t = c.totals;
      if (lastTotals) {
        const dt = Math.max((c.now_ms - lastTotals.now) / 1000, 0.001);
        const r = k => Math.max(0, (t[k] - lastTotals.t[k]) / dt);
        throughputChart.add(c.now_ms, [r("produced_bytes"), r("fetched_bytes")]);
        rates.replaceChildren(card("Produced", `${fmtBytes(r("produced_bytes"))}/s`, "produced-rate"), card("Fetched", `${fmtBytes(r("fetched_bytes"))}/s`, "fetched-rate"));
        recordsLine.textContent = `${fmtNum(r("produced_records"))} records/s in · ${fmtNum(r("fetched_records"))} records/s out · totals ${fmtNum(t.produced_records)} in, ${fmtNum(t.fetched_records)} out`;
      } else throughputChart.draw();
      lastTotals = { now: c.now_ms, t };
    } catch (e) { cards.replaceChildren(errorBox(e)); }
  });
}

function parseConfigs(text) {
  const configs = {};
  for (const line of text.split("\n").map(l => l.trim()).filter(Boolean)) {
    const i = line.indexOf("=");
    if (i < 1) throw new Error(`config lines are name=value, not ${JSON.stringify(line)}`);
    configs[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return configs;
}

async function topics() {
  const list = h("div", {}, "Loading…");
  const message = h("div");
  const showInternal = h("input", { type: "checkbox", "data-testid": "show-internal", onchange: () => load() });
  const form = h("form", { class: "inline", "data-testid": "create-topic-form" },
    h("label", {}, "Name", h("input", { name: "name", required: true, placeholder: "orders", "data-testid": "topic-name" })),
    h("label", {}, "Partitions", h("input", { name: "partitions", type: "number", min: 1, value: 1, style: "width:90px", "data-testid": "topic-partitions" })),
    h("label", {}, "Replication factor", h("input", { name: "rf", type: "number", min: 1, value: 1, style: "width:90px" })),
    h("label", {}, "Configs (name=value per line)", h("textarea", { name: "configs", rows: 2, cols: 34, placeholder: "retention.ms=86400000", "data-testid": "topic-configs" })),
    h("button", { type: "submit", "data-testid": "create-topic" }, "Create topic"));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      const created = await api("POST", "/topics", { name: f.get("name"), partitions: Number(f.get("partitions")),
        replication_factor: Number(f.get("rf")), configs: parseConfigs(f.get("configs") || "") });
      message.replaceChildren(h("div", { class: "notice", "data-testid": "notice" }, `Created topic ${created.name}.`));
      form.reset(); load();
    } catch (e) { message.replaceChildren(errorBox(e)); }
  });
  async function load() {
    try {
      const data = await api("GET", `/topics?internal=${showInternal.checked}`);
      list.replaceChildren(table([
        { label: "Topic", render: t => link(`#/topics/${enc(t.name)}`, t.name) },
        { label: "Partitions", key: "partitions", num: true }, { label: "Replication", key: "replication_factor", num: true },
        { label: "Health", render: t => t.offline_partitions ? h("span", { class: "tag state-offline" }, `${t.offline_partitions} offline`)
          : t.under_replicated_partitions ? h("span", { class: "tag state-under-replicated" }, `${t.under_replicated_partitions} under-replicated`)
          : h("span", { class: "tag state-ok" }, "ok") },
        { label: "Records", render: t => fmtNum(t.records), num: true }, { label: "Size", render: t => fmtBytes(t.size_bytes), num: true },
        { label: "Config overrides", render: t => Object.entries(t.configs).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`)) },
        { label: "", render: t => link(`#/topics/${enc(t.name)}/messages`, "messages") },
      ], data.topics, { testid: "topics-table", key: t => t.name, empty: "No topics yet: create one above." }));
    } catch (e) { list.replaceChildren(errorBox(e)); }
  }
  view.replaceChildren(h("h1", {}, "Topics"), h("div", { class: "panel" }, h("h2", { style: "margin-top:0" }, "Create a topic"), form, message),
    h("label", { style: "flex-direction:row;align-items:center;gap:6px;margin-bottom:8px" }, showInternal, "Show internal topics"), list);
  timers.push(setInterval(load, 5000));
  await load();
}

async function topicDetail(name) {
  const body = h("div", {}, "Loading…");
  const message = h("div");
  view.replaceChildren(h("h1", {}, "Topic ", h("span", { "data-testid": "topic-title" }, name)),
    h("p", {}, link(`#/topics/${enc(name)}/messages`, "Browse messages →"), " · ", link("#/topics", "all topics")), message, body);
  async function load() {
    const t = await api("GET", `/topics/${enc(name)}`);
    const configForm = h("form", { class: "inline", "data-testid": "config-form" },
      h("label", {}, "Config", h("select", { name: "config" }, t.configs.map(c => h("option", { value: c.name }, c.name)))),
      h("label", {}, "Value (empty removes the override)", h("input", { name: "value", "data-testid": "config-value" })),
      h("button", { type: "submit" }, "Set"));
    configForm.addEventListener("submit", async ev => {
      ev.preventDefault();
      const f = new FormData(configForm);
      try {
        await api("PUT", `/topics/${enc(name)}/configs`, { configs: { [f.get("config")]: f.get("value") === "" ? null : f.get("value") } });
        message.replaceChildren(h("div", { class: "notice" }, `Updated ${f.get("config")}.`)); await load();
      } catch (e) { message.replaceChildren(errorBox(e)); }
    });
    const produceForm = h("form", { class: "inline", "data-testid": "produce-form" },
      h("label", {}, "Partition", h("select", { name: "partition" }, h("option", { value: "" }, "by key"), t.partitions.map(p => h("option", { value: p.partition }, p.partition)))),
      h("label", {}, "Key", h("input", { name: "key", "data-testid": "produce-key" })),
      h("label", {}, "Value", h("textarea", { name: "value", rows: 2, cols: 40, "data-testid": "produce-value" })),
      h("button", { type: "submit", "data-testid": "produce" }, "Produce"));
    produceForm.addEventListener("submit", async ev => {
      ev.preventDefault();
      const f = new FormData(produceForm);
      const record = { key: f.get("key") === "" ? null : f.get("key"), value: f.get("value") };
      if (f.get("partition") !== "") record.partition = Number(f.get("partition"));
      try {
        const r = await api("POST", `/topics/${enc(name)}/records`, { records: [record] });
        message.replaceChildren(h("div", { class: "notice", "data-testid": "notice" }, `Produced at partition ${r.offsets[0].partition}, offset ${r.offsets[0].offset}.`));
        await load();
      } catch (e) { message.replaceChildren(errorBox(e)); }
    });
    const del = h("button", { class: "danger", "data-testid": "delete-topic", onclick: async () => {
      if (!confirm(`Delete topic ${name} and all its data?`)) return;
      try { await api("DELETE", `/topics/${enc(name)}`); location.hash = "#/topics"; } catch (e) { message.replaceChildren(errorBox(e)); }
    } }, "Delete topic");
    body.replaceChildren(
      h("div", { class: "cards" }, card("Topic id", t.topic_id), card("Partitions", t.partition_count), card("Replication factor", t.replication_factor),
        card("Records", fmtNum(t.records)), card("Size", fmtBytes(t.size_bytes)),
        card("Under-replicated", t.under_replicated_partitions, "topic-under-replicated"), card("Offline", t.offline_partitions, "topic-offline")),
      h("h2", {}, "Partitions"),
      table([
        { label: "Partition", key: "partition", num: true }, { label: "Leader", render: p => fmtLeader(p.leader), num: true },
        { label: "Replicas", render: p => p.replicas.join(", ") }, { label: "ISR", render: p => p.isr.join(", ") },
        { label: "Offline replicas", render: p => p.offline_replicas.join(", ") || "-" },
        { label: "State", render: p => h("span", { class: "tag state-" + partitionState(p) }, partitionState(p)) },
        { label: "Start offset", render: p => fmtNum(p.log_start_offset), num: true }, { label: "End offset", render: p => fmtNum(p.log_end_offset), num: true },
        { label: "High watermark", render: p => fmtNum(p.high_watermark), num: true }, { label: "Size", render: p => fmtBytes(p.size_bytes), num: true },
        { label: "Segments", render: p => fmtNum(p.segments), num: true },
        ...(t.replication_factor > 1 ? [  // the leader's bytes above the high watermark, and the producers it holds for them
          { label: "Backlog", render: p => fmtBytes(p.backlog_bytes), num: true },
          { label: "Held producers", render: p => p.backlog_held ? h("span", { class: "tag state-under-replicated" }, fmtNum(p.backlog_held)) : fmtNum(p.backlog_held), num: true }] : []),
      ], t.partitions, { testid: "partitions-table", key: p => p.partition, onRow: p => { location.hash = `#/topics/${enc(name)}/messages?partition=${p.partition}`; } }),
      ...(t.partitions.some(p => p.cleaner) ? [h("h2", {}, "Log cleaner (this broker's replicas)"), table([
        { label: "Partition", key: "partition", num: true }, { label: "Last cleaned offset", render: p => fmtNum(p.cleaner.last_cleaned_offset), num: true },
        { label: "Dirty ratio", render: p => `${p.cleaner.dirty_ratio.toFixed(2)} (cleaned above ${p.cleaner.min_cleanable_dirty_ratio})`, num: true },
        { label: "Cleanable", render: p => fmtBytes(p.cleaner.cleanable_bytes), num: true }, { label: "Clean", render: p => fmtBytes(p.cleaner.clean_bytes), num: true },
        { label: "Runs", render: p => fmtNum(p.cleaner.runs), num: true },
        { label: "State", render: p => p.cleaner.cleaning ? "cleaning" : p.cleaner.uncleanable ? "uncleanable" : "idle" },
        { label: "Last error", render: p => p.cleaner.last_error || "-" },
      ], t.partitions.filter(p => p.cleaner), { testid: "cleaner-table", key: p => p.partition })] : []),
      ...(t.delay ? [h("h2", {}, `Delay movers (to ${t.delay.target_topic} when due)`), table([
        { label: "Partition", key: "partition", num: true },
        { label: "Target", render: d => `${d.target_topic}-${d.target_partition ?? "?"} (${d.target_local ? "led here" : "broker " + fmtLeader(d.target_leader)})` },
        { label: "State", render: d => h("span", { class: "tag " + (["failing", "unavailable", "no_target"].includes(d.state) ? "state-offline" : "state-ok") }, delayState(d)) },
        { label: "Waiting", render: d => fmtNum(d.waiting_records), num: true },
        { label: "Next due (UTC)", render: d => d.next_due_ms === null ? "-" : fmtTime(d.next_due_ms) },
        { label: "Moved", render: d => fmtNum(d.moved_records), num: true }, { label: "Lost", render: d => fmtNum(d.lost_records), num: true },
        { label: "Last move late", render: d => d.last_move_late_ms === null ? "-" : `${fmtNum(d.last_move_late_ms)} ms`, num: true },
        { label: "Progress committed", render: d => `${d.committed_offset === null || d.committed_offset === undefined ? "-" : fmtNum(d.committed_offset)}${d.recovered_from ? ` (started from ${d.recovered_from})` : ""}` },
        { label: "Last error", render: d => d.last_error || d.commit_error || "-" },
      ], t.delay.partitions, { testid: "delay-table", key: d => d.partition })] : []),
      ...(t.share_groups.length ? [h("h2", {}, "Share groups reading it (here)"), table([
        { label: "Group", render: q => link(`#/share-groups/${enc(q.group)}`, q.group) }, { label: "Partition", key: "partition", num: true },
        { label: "Available by priority", render: q => Object.entries(q.available_by_priority || {}).map(([prio, n]) => h("span", { class: "tag" }, `p${prio}: ${fmtNum(n)}`)) },
        { label: "Delayed", render: q => q.delayed ?? "-", num: true },
      ], t.share_groups, { testid: "topic-share-groups-table", key: q => `${q.group}-${q.partition}` })] : []),
      h("h2", {}, "Produce a record"), h("div", { class: "panel" }, produceForm),
      h("h2", {}, "Configs"), h("div", { class: "panel" }, configForm),
      table([
        { label: "Name", render: c => h("code", {}, c.name) }, { label: "Value", render: c => h("code", {}, c.value ?? "null") },
        { label: "Source", render: c => h("span", { class: "tag" }, c.source) }, { label: "", render: c => h("span", { class: "muted" }, c.documentation) },
      ], t.configs, { testid: "configs-table" }),
      h("h2", {}, "Danger zone"), t.internal ? h("p", { class: "muted" }, "Internal topic.") : del);
  }
  try { await load(); } catch (e) { body.replaceChildren(errorBox(e)); }
}

// Bytes of a record field as the API gave it (text or base64).
function fieldBytes(value, encoding) {
  if (value === null) return null;
  if (encoding === "base64") return Uint8Array.from(atob(value), c => c.charCodeAt(0));
  return new TextEncoder().encode(value);
}
function renderValue(value, encoding, mode, quiet) {
  if (value === null) return h("span", { class: "muted" }, "null");
  const bytes = fieldBytes(value, encoding);
  if (mode === "hex") {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const chunk = Array.from(bytes.slice(i, i + 16));
      lines.push(i.toString(16).padStart(6, "0") + "  " + chunk.map(b => b.toString(16).padStart(2, "0")).join(" ").padEnd(48) + "  " +
        chunk.map(b => b >= 32 && b < 127 ? String.fromCharCode(b) : ".").join(""));
    }
    return h("pre", { "data-testid": "value-hex" }, lines.join("\n"));
  }
  const text = encoding === "base64" ? new TextDecoder("utf-8", { fatal: false }).decode(bytes) : value;
  if (mode === "json") {
    try { return h("pre", { "data-testid": "value-json" }, JSON.stringify(JSON.parse(text), null, 2)); }
    catch { return quiet ? h("pre", {}, text) : h("div", {}, h("div", { class: "muted" }, "Not JSON; shown as text."), h("pre", {}, text)); }
  }
  return h("pre", { "data-testid": "value-text" }, encoding === "base64" ? `(binary, base64) ${value}` : text);
}

async function messages(name, params) {
  let t;
  try { t = await api("GET", `/topics/${enc(name)}`); } catch (e) { view.replaceChildren(errorBox(e)); return; }
  const partition = h("select", { name: "partition", "data-testid": "browse-partition" }, t.partitions.map(p => h("option", { value: p.partition }, p.offline ? `${p.partition} (offline)` : `${p.partition} (${fmtNum(p.log_start_offset)}–${fmtNum(p.high_watermark)}, leader ${p.leader})`)));
  partition.value = params.get("partition") || "0";
  const mode = h("select", { name: "mode", "data-testid": "browse-mode" }, h("option", { value: "offset" }, "from offset"), h("option", { value: "time" }, "from time"), h("option", { value: "latest" }, "latest"));
  const offset = h("input", { name: "offset", type: "number", min: 0, value: params.get("offset") || "", placeholder: "start", style: "width:110px", "data-testid": "browse-offset" });
  const time = h("input", { name: "time", type: "datetime-local", step: 1, "data-testid": "browse-time" });
  const limit = h("input", { name: "limit", type: "number", min: 1, max: 1000, value: 50, style: "width:80px" });
  const valueMode = h("select", { "data-testid": "value-mode" }, h("option", { value: "text" }, "text"), h("option", { value: "json" }, "JSON"), h("option", { value: "hex" }, "hex"));
  const results = h("div");
  const form = h("form", { class: "inline", "data-testid": "browse-form" },
    h("label", {}, "Partition", partition), h("label", {}, "Start", mode), h("label", {}, "Offset", offset), h("label", {}, "Time (UTC)", time),
    h("label", {}, "Limit", limit), h("label", {}, "Show values as", valueMode), h("button", { type: "submit", "data-testid": "browse" }, "Load"));
  let last = null;
  function render() {
    if (!last) return;
    const rows = last.records;
    const detail = h("div", { "data-testid": "record-detail" });
    results.replaceChildren(
      h("p", { class: "muted", "data-testid": "browse-summary" }, `${rows.length} records · log ${last.log_start_offset}–${last.high_watermark} · next offset ${last.next_offset}`),
      table([
        { label: "Offset", key: "offset", num: true }, { label: "Timestamp (UTC)", render: r => fmtTime(r.timestamp) },
        { label: "Key", render: r => r.key === null ? h("span", { class: "muted" }, "null") : h("div", { class: "truncate mono" }, r.key_encoding === "base64" ? `b64:${r.key}` : r.key) },
        { label: "Headers", render: r => r.headers.map(x => h("span", { class: "tag" }, `${x.key}=${x.value ?? "null"}`)) },
        { label: "Value", render: r => r.value === null ? h("span", { class: "muted" }, "null") : h("div", { class: "truncate mono" }, r.value_encoding === "base64" ? `b64:${r.value}` : r.value) },
      ], rows, { testid: "records-table", key: r => r.offset, empty: "No records there.", onRow: r => showRecord(r, detail) }),
      detail,
      last.next_offset < last.high_watermark ? h("button", { class: "secondary", "data-testid": "next-page", onclick: () => { mode.value = "offset"; offset.value = last.next_offset; load(); } }, "Next page →") : "");
    if (rows.length === 1) showRecord(rows[0], detail);
  }
  function showRecord(r, detail) {
    detail.replaceChildren(h("div", { class: "panel" },
      h("h2", { style: "margin-top:0" }, `Offset ${r.offset}`),
      h("p", {}, `Partition ${partition.value} · ${r.timestamp_type} ${fmtTime(r.timestamp)}`),
      h("div", {}, h("strong", {}, "Key"), renderValue(r.key, r.key_encoding, valueMode.value, true)),
      h("div", {}, h("strong", {}, "Headers"), r.headers.length ? table([{ label: "Key", key: "key" }, { label: "Value", render: x => renderValue(x.value, x.value_encoding, valueMode.value, true) }], r.headers) : h("span", { class: "muted" }, " none")),
      h("div", {}, h("strong", {}, "Value"), renderValue(r.value, r.value_encoding, valueMode.value))));
    detail.dataset.offset = r.offset;
  }
  async function load() {
    const q = new URLSearchParams({ limit: limit.value || "50" });
    const p = t.partitions[Number(partition.value)];
    if (mode.value === "offset" && offset.value !== "") q.set("offset", offset.value);
    if (mode.value === "time" && time.value) q.set("timestamp", String(Date.parse(time.value + "Z")));
    if (mode.value === "latest") q.set("offset", String(Math.max(p.log_start_offset, p.high_watermark - Number(limit.value || 50))));
    try {
      last = await api("GET", `/topics/${enc(name)}/partitions/${partition.value}/records?${q}`);
      render();
    } catch (e) { results.replaceChildren(errorBox(e)); }
  }
  form.addEventListener("submit", ev => { ev.preventDefault(); load(); });
  valueMode.addEventListener("change", () => { const d = results.querySelector("[data-testid=record-detail]"); const o = d && d.dataset.offset; render(); if (o !== undefined && o !== null) { const r = last.records.find(x => String(x.offset) === o); if (r) showRecord(r, results.querySelector("[data-testid=record-detail]")); } });
  view.replaceChildren(h("h1", {}, "Messages in ", link(`#/topics/${enc(name)}`, name)), h("div", { class: "panel" }, form), results);
  await load();
}

async function groups() {
  const list = h("div", {}, "Loading…");
  view.replaceChildren(h("h1", {}, "Consumer groups"), list);
  every(3000, async () => {
    try {
      const data = await api("GET", "/groups");
      list.replaceChildren(table([
        { label: "Group", render: g => link(`#/groups/${enc(g.group_id)}`, g.group_id) }, { label: "State", render: g => h("span", { class: "tag" }, g.state) },
        { label: "Protocol", key: "protocol_type" }, { label: "Members", key: "members", num: true },
        { label: "Topics", render: g => g.topics.join(", ") }, { label: "Lag", render: g => fmtNum(g.lag), num: true },
      ], data.groups, { testid: "groups-table", key: g => g.group_id, empty: "No consumer groups yet." }));
    } catch (e) { list.replaceChildren(errorBox(e)); }
  });
}

const lagCharts = {};
async function groupDetail(id) {
  const body = h("div", {}, "Loading…");
  if (!lagCharts[id]) lagCharts[id] = new Chart([{ name: "total lag (records)", color: "#e8590c" }]);
  const chart = lagCharts[id];
  view.replaceChildren(h("h1", {}, "Group ", h("span", { "data-testid": "group-title" }, id)), body, h("h2", {}, "Lag over time"), h("div", { class: "panel" }, chart.el));
  every(2000, async () => {
    try {
      const g = await api("GET", `/groups/${enc(id)}`);
      chart.add(Date.now(), [g.lag]);
      body.replaceChildren(
        h("div", { class: "cards" }, card("State", g.state, "group-state"), card("Protocol", `${g.protocol_type || "-"} ${g.protocol || ""}`),
          card("Generation", g.generation_id), card("Members", g.members.length), card("Total lag", fmtNum(g.lag), "group-lag")),
        h("h2", {}, "Members and assignments"),
        table([
          { label: "Member", render: m => h("code", {}, m.member_id) }, { label: "Instance", render: m => m.group_instance_id || "-" },
          { label: "Client", key: "client_id" }, { label: "Host", key: "client_host" },
          { label: "Assignment", render: m => m.assignment.map(a => h("span", { class: "tag" }, `${a.topic}: ${a.partitions.join(",")}`)) },
        ], g.members, { testid: "members-table", empty: "No active members (offsets only)." }),
        h("h2", {}, "Committed offsets and lag"),
        table([
          { label: "Topic", render: o => link(`#/topics/${enc(o.topic)}`, o.topic) }, { label: "Partition", key: "partition", num: true },
          { label: "Committed", key: "committed_offset", num: true }, { label: "Log end", key: "log_end_offset", num: true },
          { label: "Lag", key: "lag", num: true }, { label: "Committed at (UTC)", render: o => fmtTime(o.commit_timestamp_ms) },
        ], g.offsets, { testid: "offsets-table", empty: "No committed offsets." }));
    } catch (e) { body.replaceChildren(errorBox(e)); }
  });
}

// --- share groups (queues) ------------------------------------------------------------
async function shareGroups() {
  const list = h("div", {}, "Loading…");
  view.replaceChildren(h("h1", {}, "Share groups"), list);
  every(3000, async () => {
    try {
      const data = await api("GET", "/share-groups");
      list.replaceChildren(table([
        { label: "Group", render: g => link(`#/share-groups/${enc(g.group_id)}`, g.group_id) }, { label: "State", render: g => h("span", { class: "tag" }, g.state) },
        { label: "Members", key: "members", num: true }, { label: "Topics", render: g => g.topics.join(", ") },
        { label: "Lag", render: g => fmtNum(g.lag), num: true }, { label: "In flight", render: g => fmtNum(g.in_flight), num: true },
        { label: "Dead-lettered", render: g => fmtNum(g.dead_lettered), num: true },
      ], data.groups, { testid: "share-groups-table", key: g => g.group_id, empty: "No share groups yet." }));
    } catch (e) { list.replaceChildren(errorBox(e)); }
  });
}

const shareCharts = {};
async function shareGroupDetail(id) {
  const body = h("div", {}, "Loading…");
  if (!shareCharts[id]) shareCharts[id] = new Chart([{ name: "lag (records)", color: "#e8590c" }, { name: "in flight", color: "#0f6bdc", dash: [6, 4] }]);
  const chart = shareCharts[id];
  view.replaceChildren(h("h1", {}, "Share group ", h("span", { "data-testid": "share-group-title" }, id)), body,
    h("h2", {}, "Lag and records in flight over time"), h("div", { class: "panel" }, chart.el));
  every(2000, async () => {
    try {
      const g = await api("GET", `/share-groups/${enc(id)}`);
      chart.add(Date.now(), [g.lag, g.in_flight]);
      const c = g.counts;
      const states = p => ["available", "acquired", "acknowledged", "archived"].map(s => `${s} ${fmtNum(p.records[s])}`).join(" · ");
      const counts = p => Object.entries(p.delivery_counts).map(([n, records]) => h("span", { class: "tag" }, `${records} × ${n}`));
      body.replaceChildren(
        h("div", { class: "cards" }, card("State", g.state, "share-group-state"), card("Members", g.members.length, "share-group-members"),
          card("Lag", fmtNum(g.lag), "share-group-lag"), card("In flight", fmtNum(g.in_flight), "share-group-in-flight"),
          card("Dead-lettered", fmtNum(c.dead_lettered), "share-group-dead-lettered"),
          card("Lock / delivery limit", `${fmtDuration(g.config.record_lock_duration_ms)} / ${g.config.delivery_count_limit}`),
          card("Dead-letter topic", g.config.dead_letter_topic || "none"),
          card("Queue configs", Object.entries(g.config.tidelog).filter(([k, v]) => v !== "" && v !== 0)
            .map(([k, v]) => `${k.replace("tidelog.", "")}=${v}`).join(" · ") || "defaults", "share-group-queue-configs")),
        h("h2", {}, "Records since the broker started"),
        h("div", { class: "cards", "data-testid": "share-group-counts" },
          Object.keys(c).map(k => card(k.replace(/_/g, " "), fmtNum(c[k]), `count-${k}`))),
        h("h2", {}, "Members"),
        table([
          { label: "Member", render: m => h("code", {}, m.member_id) }, { label: "Client", key: "client_id" }, { label: "Host", key: "client_host" },
          { label: "Epoch", key: "member_epoch", num: true },
          { label: "Assignment", render: m => m.assignment.map(a => h("span", { class: "tag" }, `${a.topic}: ${a.partitions.join(",")}`)) },
          { label: "Records held", key: "acquired_records", num: true },
        ], g.members, { testid: "share-members-table", key: m => m.member_id, empty: "No members." }),
        h("h2", {}, "Share-partitions"),
        table([
          { label: "Topic", render: p => link(`#/topics/${enc(p.topic)}`, p.topic) }, { label: "Partition", key: "partition", num: true },
          { label: "Start offset", key: "start_offset", num: true }, { label: "Next offset", render: p => p.next_offset ?? "-", num: true },
          { label: "Lag", render: p => fmtNum(p.lag), num: true }, { label: "In flight", key: "in_flight", num: true },
          { label: "Records by state", render: p => p.loaded ? states(p) : "not loaded" },
          { label: "Delivery counts (records × count)", render: p => counts(p) },
          { label: "Available by priority", render: p => Object.entries(p.queue.available_by_priority || {})
            .map(([prio, n]) => h("span", { class: "tag" }, `p${prio}: ${fmtNum(n)}`)) },
          { label: "Delayed", render: p => p.queue.delayed ?? "-", num: true },
          { label: "Topic queue settings", render: p => Object.entries(p.queue.settings)
            .filter(([k, v]) => (p.queue.settings["tidelog.priority.enable"] || !k.startsWith("tidelog.priority."))
              && v !== false && v !== "" && v !== -1 && v !== 0)
            .map(([k, v]) => h("span", { class: "tag" }, `${k.replace("tidelog.", "")}=${v}`)) },
        ], g.partitions, { testid: "share-partitions-table", key: p => `${p.topic}-${p.partition}`, empty: "No share-partitions yet." }),
        h("h2", {}, "Records in flight"),
        table([
          { label: "Topic", key: "topic" }, { label: "Partition", key: "partition", num: true },
          { label: "Offsets", render: r => r.first_offset === r.last_offset ? r.first_offset : `${r.first_offset}–${r.last_offset}` },
          { label: "State", render: r => h("span", { class: "tag" }, r.state) }, { label: "Delivery count", key: "delivery_count", num: true },
          { label: "Member", render: r => r.member_id ? h("code", {}, r.member_id) : "-" },
        ], g.partitions.flatMap(p => p.runs.map(r => ({ ...r, topic: p.topic, partition: p.partition }))),
          { testid: "share-runs-table", empty: "Nothing in flight." }));
    } catch (e) { body.replaceChildren(errorBox(e)); }
  });
}

// --- transactions ----------------------------------------------------------------------
async function transactions() {
  const list = h("div", {}, "Loading…");
  view.replaceChildren(h("h1", {}, "Transactions"), list);
  every(3000, async () => {
    try {
      const data = await api("GET", "/transactions");
      const now = Date.now();
      list.replaceChildren(table([
        { label: "Transactional id", render: t => h("code", {}, t.transactional_id) },
        { label: "State", render: t => h("span", { class: "tag" }, t.state) },
        { label: "Coordinator", key: "coordinator", num: true }, { label: "Producer id", key: "producer_id", num: true },
        { label: "Epoch", render: t => t.producer_epoch ?? "-", num: true },
        { label: "Open for", render: t => t.start_time_ms ? `${fmtNum(Math.round((now - t.start_time_ms) / 1000))} s` : "-", num: true },
        { label: "Partitions", render: t => t.partitions.map(p => h("span", { class: "tag" }, `${p.topic}: ${p.partition}`)) },
      ], data.transactions, { testid: "transactions-table", key: t => t.transactional_id, empty: "No transactional ids yet." }));
    } catch (e) { list.replaceChildren(errorBox(e)); }
  });
}

// --- routing -----------------------------------------------------------------------
const pages = {};  // section -> (parts, params) => [page name, promise of the rendered page]

// A section of the console kept in its own file: #/SECTION/... renders with render(parts, params).
function registerPage(section, render) { pages[section] = render; }

async function route() {
  clearTimers();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "overview";
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === section));
  view.dataset.page = "";
  let page;
  if (parts[0] === "topics" && parts.length === 1) page = ["topics", topics()];
  else if (parts[0] === "topics" && parts[2] === "messages") page = ["messages", messages(parts[1], params)];
  else if (parts[0] === "topics") page = ["topic", topicDetail(parts[1])];
  else if (parts[0] === "groups" && parts.length === 1) page = ["groups", groups()];
  else if (parts[0] === "groups") page = ["group", groupDetail(parts[1])];
  else if (parts[0] === "share-groups" && parts.length === 1) page = ["share-groups", shareGroups()];
  else if (parts[0] === "share-groups") page = ["share-group", shareGroupDetail(parts[1])];
  else if (parts[0] === "transactions") page = ["transactions", transactions()];
  else if (pages[parts[0]]) page = pages[parts[0]](parts, params);
  else page = ["overview", overview()];
  await page[1];
  view.dataset.page = page[0];
}

async function readiness() {
  const el = document.getElementById("status");
  try {
    const r = await fetch("/ready");
    const body = await r.json().catch(() => ({}));
    el.textContent = r.ok ? "ready" : "not ready"; el.className = "status " + (r.ok ? "ok" : "bad");
    el.title = r.ok ? "Broker ready" : (body.reasons || []).join("; ");
  } catch { el.textContent = "unreachable"; el.className = "status bad"; }
}

window.addEventListener("hashchange", route);
setInterval(readiness, 5000);
readiness();
document.addEventListener("DOMContentLoaded", route);  // after the sections' own files have registered

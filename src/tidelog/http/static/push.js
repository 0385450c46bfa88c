// Tidelog console: push subscriptions (docs/push.md). #/push lists them (and creates one), #/push/NAME shows one:
// its status and counters, its settings (changed in place), pause / resume / delete. Uses console.js's helpers.
"use strict";

const PUSH_STATE_TAGS = { active: "state-ok", idle: "", paused: "state-under-replicated", failing: "state-offline" };
function pushStateTag(state) { return h("span", { class: `tag ${PUSH_STATE_TAGS[state] || ""}`, "data-testid": "push-state" }, state); }
function fmtMs(ms) { return ms === null || ms === undefined ? "-" : `${fmtNum(ms)} ms`; }
function fmtLatency(s) { return s.latency_p50_ms === null || s.latency_p50_ms === undefined ? "-" : `${fmtMs(s.latency_p50_ms)} / ${fmtMs(s.latency_p99_ms)}`; }

// Delivered records per second, from two polls of the counter (kept across visits).
const pushRates = {};
function deliveredRate(name, delivered) {
  const now = Date.now(), last = pushRates[name];
  pushRates[name] = { t: now, delivered, rate: last && now > last.t ? Math.max(0, (delivered - last.delivered) * 1000 / (now - last.t)) : (last ? last.rate : null) };
  return pushRates[name].rate;
}
function fmtRate(r) { return r === null || r === undefined ? "-" : r < 10 && r > 0 ? r.toFixed(1) : fmtNum(r); }

// The settings a subscription has beyond name, topics and endpoint: [field, label, input type].
const PUSH_SETTINGS = [
  ["batch_size", "Batch size (records)", "number"], ["linger_ms", "Linger (ms)", "number"],
  ["max_concurrency", "Max concurrency", "number"], ["ack_deadline_ms", "Ack deadline (ms)", "number"],
  ["backoff_initial_ms", "Back-off initial (ms)", "number"], ["backoff_multiplier", "Back-off multiplier", "number"],
  ["backoff_max_ms", "Back-off max (ms)", "number"], ["delivery_limit", "Delivery limit", "number"],
  ["dead_letter_topic", "Dead-letter topic", "text"],
];

async function pushList() {
  const list = h("div", {}, "Loading…");
  const message = h("div");
  const form = h("form", { class: "inline", "data-testid": "push-create-form" },
    h("label", {}, "Name", h("input", { name: "name", required: true, placeholder: "orders-webhook", "data-testid": "push-name" })),
    h("label", {}, "Topics (comma-separated)", h("input", { name: "topics", required: true, placeholder: "orders", "data-testid": "push-topics" })),
    h("label", {}, "Endpoint", h("input", { name: "endpoint", required: true, type: "url", size: 36, placeholder: "https://example.com/hook", "data-testid": "push-endpoint" })),
    h("label", {}, "Batch size", h("input", { name: "batch_size", type: "number", min: 1, value: 100, style: "width:90px" })),
    h("button", { type: "submit", "data-testid": "push-create" }, "Create subscription"));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      const created = await api("POST", "/push-subscriptions", { name: f.get("name"), endpoint: f.get("endpoint"),
        topics: f.get("topics").split(",").map(t => t.trim()).filter(Boolean), batch_size: Number(f.get("batch_size")) });
      message.replaceChildren(h("div", { class: "notice", "data-testid": "notice" },
        `Created push subscription ${created.name}. Its signing secret, shown only now: `, h("code", { "data-testid": "push-secret" }, created.secret)));
      form.reset(); await load();
    } catch (e) { message.replaceChildren(errorBox(e)); }
  });
  async function load() {
    try {
      const data = await api("GET", "/push-subscriptions");
      list.replaceChildren(table([
        { label: "Name", render: s => link(`#/push/${enc(s.name)}`, s.name) },
        { label: "Topics", render: s => s.topics.map(t => h("span", { class: "tag" }, t)) },
        { label: "Endpoint", render: s => h("span", { class: "truncate mono", title: s.endpoint }, s.endpoint) },
        { label: "State", render: s => pushStateTag(s.status.state) },
        { label: "Delivered/s", render: s => fmtRate(deliveredRate(s.name, s.status.delivered)), num: true },
        { label: "Backlog", render: s => fmtNum(s.status.backlog), num: true },
        { label: "Last error", render: s => s.status.last_error ? h("span", { class: "bad-text truncate", title: s.status.last_error }, s.status.last_error) : "-" },
      ], data.subscriptions, { testid: "push-table", key: s => s.name, empty: "No push subscriptions yet: create one above." }));
    } catch (e) { list.replaceChildren(errorBox(e)); }
  }
  view.replaceChildren(h("h1", {}, "Push subscriptions"),
    h("div", { class: "panel" }, h("h2", { style: "margin-top:0" }, "Create a push subscription"), form, message), list);
  timers.push(setInterval(load, 3000));
  await load();
}

const pushCharts = {};
async function pushDetail(name) {
  const body = h("div", {}, "Loading…");
  const message = h("div");
  if (!pushCharts[name]) pushCharts[name] = new Chart([{ name: "delivered/s", color: "#0f6bdc" }, { name: "backlog (records)", color: "#e8590c", dash: [6, 4] }], fmtRate);
  const chart = pushCharts[name];
  let shown = null;  // the subscription the settings form was filled from
  const settings = h("div");
  const act = (action, done) => async () => {
    try { await api("POST", `/push-subscriptions/${enc(name)}/${action}`); message.replaceChildren(h("div", { class: "notice", "data-testid": "notice" }, done)); await load(); }
    catch (e) { message.replaceChildren(errorBox(e)); }
  };
  const pause = h("button", { class: "secondary", "data-testid": "push-pause", onclick: act("pause", `Paused ${name}.`) }, "Pause");
  const resume = h("button", { "data-testid": "push-resume", onclick: act("resume", `Resumed ${name}.`) }, "Resume");
  const del = h("button", { class: "danger", "data-testid": "push-delete", onclick: async () => {
    if (!confirm(`Delete push subscription ${name}? Its deliveries stop.`)) return;
    try { await api("DELETE", `/push-subscriptions/${enc(name)}`); location.hash = "#/push"; } catch (e) { message.replaceChildren(errorBox(e)); }
  } }, "Delete");

  function settingsForm(s) {
    const input = (field, type, value) => h("input", { name: field, type, value: value ?? "", step: type === "number" ? "any" : null, style: type === "number" ? "width:110px" : null, "data-testid": `push-setting-${field}` });
    const form = h("form", { class: "inline", "data-testid": "push-settings-form" },
      h("label", {}, "Topics (comma-separated)", input("topics", "text", s.topics.join(","))),
      h("label", {}, "Endpoint", h("input", { name: "endpoint", type: "url", size: 36, value: s.endpoint, "data-testid": "push-setting-endpoint" })),
      PUSH_SETTINGS.map(([field, label, type]) => h("label", {}, label, input(field, type, s[field]))),
      h("label", {}, "Payload format", h("select", { name: "payload_format", "data-testid": "push-setting-payload_format" },
        ["batch", "raw"].map(b => h("option", { value: b, selected: s.payload_format === b }, b)))),
      h("button", { type: "submit", "data-testid": "push-save" }, "Save changes"));
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const f = new FormData(form), changes = {};
      const topics = f.get("topics").split(",").map(t => t.trim()).filter(Boolean);
      if (topics.join(",") !== s.topics.join(",")) changes.topics = topics;
      if (f.get("endpoint") !== s.endpoint) changes.endpoint = f.get("endpoint");
      if (f.get("payload_format") !== s.payload_format) changes.payload_format = f.get("payload_format");
      for (const [field, , type] of PUSH_SETTINGS) {
        const raw = f.get(field), value = type === "number" ? (raw === "" ? null : Number(raw)) : (raw === "" ? null : raw);
        if (value !== (s[field] ?? null)) changes[field] = value;
      }
      if (!Object.keys(changes).length) { message.replaceChildren(h("div", { class: "notice" }, "Nothing changed.")); return; }
      try {
        await api("PATCH", `/push-subscriptions/${enc(name)}`, changes);
        message.replaceChildren(h("div", { class: "notice", "data-testid": "notice" }, `Updated ${Object.keys(changes).join(", ")}.`));
        shown = null; await load();
      } catch (e) { message.replaceChildren(errorBox(e)); }
    });
    return form;
  }

  async function load() {
    try {
      const s = await api("GET", `/push-subscriptions/${enc(name)}`), st = s.status;
      const rate = deliveredRate(name, st.delivered);
      chart.add(Date.now(), [rate || 0, st.backlog || 0]);
      pause.disabled = s.paused; resume.disabled = !s.paused;
      const failed = Object.entries(st.failed_by_status || {});
      body.replaceChildren(
        h("div", { class: "cards" }, card("State", pushStateTag(st.state), "push-detail-state"),
          card("Delivered/s", fmtRate(rate), "push-rate"), card("Backlog", fmtNum(st.backlog), "push-backlog"),
          card("In flight", fmtNum(st.in_flight), "push-in-flight"), card("Concurrency", `${st.concurrency} of ${s.max_concurrency}`, "push-concurrency"),
          card("Latency p50 / p99", fmtLatency(st), "push-latency")),
        h("p", { class: "muted", "data-testid": "push-status-scope" }, `${(st.partitions || []).length} share-partitions, delivered by `,
          `broker ${(st.brokers || []).join(", ") || "-"} (each the share-partitions it leads; counters since each started).`),
        (st.unreachable || []).length ? h("div", { class: "error" }, `Not counted (did not answer): broker ${st.unreachable.join(", ")}.`) : "",
        st.last_error ? h("div", { class: "error", "data-testid": "push-last-error" },
          `Last error${st.last_error_ms ? ` (${fmtTime(st.last_error_ms)} UTC)` : ""}: ${st.last_error}`) : "",
        h("h2", {}, "Records since the broker started"),
        h("div", { class: "cards", "data-testid": "push-counts" },
          ["delivered", "acknowledged", "retries", "dead_lettered"].map(k => card(k.replace(/_/g, " "), fmtNum(st[k]), `push-count-${k}`))),
        h("h2", {}, "Failed deliveries by answer"),
        table([{ label: "Answer", key: 0 }, { label: "Deliveries", render: r => fmtNum(r[1]), num: true }], failed,
          { testid: "push-failed-table", empty: "None." }),
        h("h2", {}, "Delivered/s and backlog over time"), h("div", { class: "panel" }, chart.el));
      if (shown === null || shown.endpoint !== s.endpoint || shown.topics.join() !== s.topics.join()) {
        shown = s;
        settings.replaceChildren(h("p", { class: "muted" },
          `Created ${fmtTime(s.created_ms)} UTC · share group `, link(`#/share-groups/${enc(s.share_group)}`, s.share_group),
          ` · bearer token ${s.bearer_token ? "set" : "not set"} · `,
          "the signing secret is shown only when the subscription is created"), settingsForm(s));
      }
    } catch (e) { body.replaceChildren(errorBox(e)); }
  }
  view.replaceChildren(h("h1", {}, "Push subscription ", h("span", { "data-testid": "push-title" }, name)),
    h("p", {}, h("span", { class: "tabs" }, pause, resume, del), " ", link("#/push", "all push subscriptions")), message, body,
    h("h2", {}, "Settings"), h("div", { class: "panel" }, settings));
  timers.push(setInterval(load, 2000));
  await load();
}

registerPage("push", parts => parts.length > 1 ? ["push-subscription", pushDetail(parts[1])] : ["push", pushList()]);

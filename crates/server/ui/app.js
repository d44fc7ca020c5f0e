// Leasehold dashboard: draws the JSON API's answers (licenses, sessions, users, usage, audit
// log) into the server-rendered shell. No framework, no CDN: plain DOM and SVG, so the page
// works at a dark site and stays small. Authenticated by the HttpOnly session cookie; every
// request that changes something carries the page's CSRF token.
"use strict";

const ACCOUNT = document.querySelector('meta[name="leasehold-account"]').content;
const CSRF = document.querySelector('meta[name="leasehold-csrf"]').content;
const LIVE_MS = 2000;
const app = document.getElementById("app");
let timer = null;
let generation = 0;

// ---- small helpers ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = CSRF;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) {
    window.location.assign("/ui");
    throw new Error("signed out");
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: "http_" + res.status, message: res.statusText };
    throw Object.assign(new Error(err.message), { code: err.code });
  }
  return data;
}

const enc = encodeURIComponent;
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const num = (n) => (n === null || n === undefined ? "–" : Number.isInteger(n) ? String(n) : n.toFixed(2));

function showError(where, e) {
  where.replaceChildren(h("p", { class: "error", role: "alert" }, `${e.code || "error"}: ${e.message}`));
}

function live(fn) {
  stopLive();
  const mine = generation;
  const tick = async () => {
    if (mine !== generation) return;
    try {
      await fn();
    } catch (e) {
      console.warn(e);
    }
    if (mine === generation) timer = setTimeout(tick, LIVE_MS);
  };
  timer = setTimeout(tick, LIVE_MS);
}

function stopLive() {
  if (timer) clearTimeout(timer);
  timer = null;
}

function seatBar(used, seats) {
  const pct = seats > 0 ? Math.min(100, Math.round((used / seats) * 100)) : 0;
  // Set through the CSSOM: the page's policy refuses inline style attributes.
  const fill = h("span", { class: pct >= 100 ? "fill full" : "fill" });
  fill.style.width = `${pct}%`;
  return h("span", { class: "bar", role: "img", "aria-label": `${used} of ${seats} seats in use` }, fill);
}

// ---- alerts (license.alerts: the same rules as /metrics and the webhook events) ----

// Whether the seats in use are at or above the alert threshold (a share of the seats).
function thresholdReached(alerts, u) {
  if (!alerts || !alerts.threshold_percent) return null;
  return u.seats > 0 && u.in_use * 100 >= alerts.threshold_percent * u.seats;
}

function thresholdBadge(alerts, u) {
  const reached = thresholdReached(alerts, u);
  if (reached === null) return "";
  return h("span", { class: reached ? "badge hot" : "badge", title: `alert at ${alerts.threshold_percent}% of the seats` },
    reached ? `≥ ${alerts.threshold_percent}%` : `< ${alerts.threshold_percent}%`);
}

// The license page's alert line: the threshold, and the denials of the last hour against the
// denial alert (from the usage series).
async function alertLine(id, alerts, u, box) {
  if (!alerts || (!alerts.threshold_percent && !alerts.denials_per_hour)) {
    box.replaceChildren();
    return;
  }
  const parts = [h("strong", {}, "Alerts: ")];
  if (alerts.threshold_percent) {
    const reached = thresholdReached(alerts, u);
    parts.push(h("span", { id: "alert-threshold", class: reached ? "badge hot" : "badge" },
      `${alerts.threshold_percent}% of seats ${reached ? "reached" : "not reached"}`), " ");
  }
  if (alerts.denials_per_hour) {
    const to = new Date();
    const from = new Date(to - 3600e3);
    const r = await api("GET", `/v1/licenses/${enc(id)}/usage?from=${enc(from.toISOString())}&to=${enc(to.toISOString())}&bucket=minute`);
    const reached = r.denials >= alerts.denials_per_hour;
    parts.push(h("span", { id: "alert-denials", class: reached ? "badge hot" : "badge" },
      `${r.denials} of ${alerts.denials_per_hour} denials in the last hour${reached ? " — reached" : ""}`));
  }
  box.replaceChildren(...parts);
}

// ---- licenses: the live view of seats ----

async function licensesView() {
  app.replaceChildren(h("h1", {}, "Licenses"), h("p", { class: "muted" }, "Seats in use, live."));
  const table = h("table", { id: "licenses" },
    h("thead", {}, h("tr", {}, ["License", "Product", "Model", "In use", "Seats", "", "Overdraft in use", "Borrowed", "Ending", "Alert"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody"));
  app.append(table);
  const draw = async () => {
    const list = await api("GET", `/v1/accounts/${enc(ACCOUNT)}/licenses`);
    const full = await Promise.all(list.licenses.map((l) => api("GET", `/v1/licenses/${enc(l.id)}`)));
    const rows = full.map((l) => {
      const u = l.usage || { in_use: 0, seats: l.seats, overdraft_in_use: 0, borrowed: 0, ending: 0 };
      return h("tr", { "data-license": l.id },
        h("td", {}, h("a", { href: `#/license/${enc(l.id)}` }, l.id.slice(0, 8))),
        h("td", {}, l.product),
        h("td", {}, l.model),
        h("td", { class: "in-use num" }, u.in_use),
        h("td", { class: "num" }, u.seats),
        h("td", {}, seatBar(u.in_use, u.seats)),
        h("td", { class: "num" }, u.overdraft_in_use),
        h("td", { class: "num" }, u.borrowed),
        h("td", { class: "num" }, u.ending),
        h("td", { class: "alert-cell" }, thresholdBadge(l.alerts, u)));
    });
    table.tBodies[0].replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 10 }, "No licenses yet."))]));
  };
  await draw();
  live(draw);
}

// ---- one license: live seats, sessions, users, usage ----

async function licenseView(id) {
  const license = await api("GET", `/v1/licenses/${enc(id)}`);
  const numbers = h("p", { id: "live-seats", class: "live" });
  const alertsBox = h("p", { id: "alerts", class: "alerts" });
  let alertsDrawn = 0;
  const sessions = h("table", { id: "sessions" },
    h("thead", {}, h("tr", {}, ["User", "Device", "App instance", "Since", "Kind", ""].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody"));
  const sessionNote = h("p", { class: "muted", role: "status" });
  const usersBox = h("section", { id: "license-users" });
  const usageBox = h("section", { id: "usage" });
  app.replaceChildren(
    h("h1", {}, license.product, " ", h("small", {}, license.id)),
    h("p", { class: "muted" }, `${license.model} · ${license.seats} seats` +
      (license.overdraft ? ` · overdraft ${license.overdraft}` : "") +
      (license.expires_at ? ` · ends ${when(license.expires_at)}` : "")),
    numbers, alertsBox,
    h("h2", {}, "Sessions"), sessionNote, sessions,
    usersBox,
    usageBox);

  const revoke = async (session, button) => {
    button.disabled = true;
    try {
      await api("DELETE", `/v1/sessions/${enc(session.id)}`);
      sessionNote.textContent = `Revoked ${session.username}'s session on ${session.device_id}.`;
      await draw();
    } catch (e) {
      sessionNote.textContent = `Could not revoke: ${e.message}`;
      button.disabled = false;
    }
  };
  const draw = async () => {
    const [l, list] = await Promise.all([
      api("GET", `/v1/licenses/${enc(id)}`),
      api("GET", `/v1/licenses/${enc(id)}/sessions`),
    ]);
    const u = l.usage;
    numbers.replaceChildren(
      h("strong", { id: "in-use" }, u.in_use), ` of ${u.seats} seats in use `, seatBar(u.in_use, u.seats),
      ` · ${u.available} free`,
      u.overdraft_in_use ? ` · ${u.overdraft_in_use} on overdraft` : "",
      u.borrowed ? ` · ${u.borrowed} borrowed` : "",
      u.ending ? ` · ${u.ending} ending` : "");
    // The denial count reads the usage series: every 30 s is enough for an hourly rate.
    if (Date.now() - alertsDrawn > 30000 || !l.alerts || !l.alerts.denials_per_hour) {
      alertsDrawn = Date.now();
      await alertLine(id, l.alerts, u, alertsBox).catch((e) => showError(alertsBox, e));
    }
    const rows = list.sessions.map((s) => {
      const button = h("button", { type: "button", class: "danger", "aria-label": `Revoke ${s.username}'s session on ${s.device_id}` }, "Revoke");
      button.addEventListener("click", () => revoke(s, button));
      return h("tr", { "data-session": s.id },
        h("td", {}, s.username),
        h("td", {}, s.device_id),
        h("td", {}, s.instance_id),
        h("td", {}, h("time", { datetime: s.opened_at }, when(s.opened_at))),
        h("td", {}, s.kind + (s.borrow_until ? " (borrowed)" : "") + (s.overdraft ? " (overdraft)" : "")),
        h("td", {}, button));
    });
    sessions.tBodies[0].replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 6 }, "No live sessions."))]));
  };
  await draw();
  live(draw);
  if (license.model === "registered_users") licenseUsers(id, usersBox);
  usageSection(`/v1/licenses/${enc(id)}/usage`, usageBox, license);
}

async function licenseUsers(id, box) {
  const draw = async () => {
    const list = await api("GET", `/v1/licenses/${enc(id)}/users`);
    box.replaceChildren(
      h("h2", {}, "Registered users"),
      h("p", { class: "muted" }, `${list.active} of ${list.max_active} active`),
      userTable(list.users, async (user, active) => {
        await api("PUT", `/v1/licenses/${enc(id)}/users/${enc(user.username)}`, { active });
      }, draw));
  };
  await draw().catch((e) => showError(box, e));
}

// A table of users with an active/inactive switch (a checkbox with role=switch).
function userTable(users, setActive, redraw) {
  const note = h("p", { class: "muted", role: "status" });
  const rows = users.map((u) => {
    const input = h("input", { type: "checkbox", role: "switch", checked: u.active, "aria-label": `${u.username} active` });
    input.addEventListener("change", async () => {
      input.disabled = true;
      try {
        await setActive(u, input.checked);
        note.textContent = `${u.username} is now ${input.checked ? "active" : "inactive"}.`;
        await redraw();
      } catch (e) {
        input.checked = !input.checked;
        note.textContent = `Could not change ${u.username}: ${e.message}`;
      } finally {
        input.disabled = false;
      }
    });
    return h("tr", { "data-user": u.username },
      h("td", {}, u.username),
      h("td", {}, u.kind || ""),
      h("td", {}, h("label", { class: "switch" }, input, h("span", {}, u.active ? "active" : "inactive"))));
  });
  return h("div", {}, note, h("table", { class: "users" },
    h("thead", {}, h("tr", {}, ["User", "Kind", "Active"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 3 }, "No users.")))));
}

async function usersView() {
  const box = h("section", { id: "users" });
  app.replaceChildren(h("h1", {}, "Users"), box);
  const draw = async () => {
    const list = await api("GET", `/v1/accounts/${enc(ACCOUNT)}/users`);
    box.replaceChildren(userTable(list.users, async (user, active) => {
      await api("PUT", `/v1/accounts/${enc(ACCOUNT)}/users/${enc(user.username)}`, { kind: user.kind, active });
    }, draw));
  };
  await draw();
}

// ---- usage: charts over a chosen range ----

const PRESETS = [
  ["Last hour", 3600, "minute"],
  ["Last 24 hours", 86400, "hour"],
  ["Last 7 days", 7 * 86400, "hour"],
  ["Last 30 days", 30 * 86400, "day"],
  ["Last 12 months", 365 * 86400, "month"],
];

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function usageSection(path, box, license) {
  const now = new Date();
  const from = h("input", { type: "datetime-local", id: "usage-from", value: localInput(new Date(now - 86400e3)) });
  const to = h("input", { type: "datetime-local", id: "usage-to", value: localInput(now) });
  const bucket = h("select", { id: "usage-bucket" }, ["minute", "hour", "day", "month"].map((b) => h("option", { value: b, selected: b === "hour" }, b)));
  const out = h("div", { id: "usage-charts" });
  const csv = h("a", { id: "usage-csv", download: "usage.csv", class: "button" }, "Export CSV");
  const query = () => `from=${enc(new Date(from.value).toISOString())}&to=${enc(new Date(to.value).toISOString())}&bucket=${enc(bucket.value)}`;
  const load = async () => {
    csv.href = `${path}?${query()}&format=csv`;
    out.setAttribute("aria-busy", "true");
    try {
      const report = await api("GET", `${path}?${query()}`);
      drawUsage(out, report, license);
    } catch (e) {
      showError(out, e);
    } finally {
      out.removeAttribute("aria-busy");
    }
  };
  const presets = PRESETS.map(([label, secs, b]) => {
    const button = h("button", { type: "button" }, label);
    button.addEventListener("click", () => {
      const end = new Date();
      to.value = localInput(end);
      from.value = localInput(new Date(end - secs * 1000));
      bucket.value = b;
      load();
    });
    return button;
  });
  const form = h("form", { class: "range", id: "usage-range" },
    h("label", {}, "From ", from), h("label", {}, "To ", to), h("label", {}, "Bucket ", bucket),
    h("button", { type: "submit" }, "Show"), csv);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });
  box.replaceChildren(h("h2", {}, "Usage"), h("div", { class: "presets" }, presets), form, out);
  load();
}

function drawUsage(out, r, license) {
  const buckets = r.buckets || [];
  const util = r.utilization || { histogram: [], full: { times: 0, seconds: 0 }, heatmap: [] };
  const summary = h("dl", { class: "summary", id: "usage-summary" },
    h("dt", {}, "High water"), h("dd", { id: "usage-high-water" }, r.high_water),
    h("dt", {}, "Low water"), h("dd", { id: "usage-low-water" }, r.low_water),
    h("dt", {}, "Denials"), h("dd", { id: "usage-denials" }, r.denials),
    h("dt", {}, "Full"), h("dd", {}, `${util.full.times} times, ${duration(util.full.seconds)}`));
  out.replaceChildren(
    summary,
    h("h3", {}, "Seats in use"),
    inUseChart(buckets, license),
    h("h3", {}, "Denials"),
    barChart(buckets.map((b) => ({ label: b.start, value: b.denials })), "denials", "Denials per bucket"),
    h("h3", {}, "Utilization: time at each number of seats in use"),
    barChart(util.histogram.map((x) => ({ label: `${x.in_use} in use`, value: x.seconds / 3600 })), "histogram", "Hours at each number of seats in use"),
    h("h3", {}, "Peaks by weekday and hour (UTC)"),
    heatmap(util.heatmap));
}

function duration(secs) {
  if (!secs) return "0 s";
  if (secs < 120) return `${Math.round(secs)} s`;
  if (secs < 7200) return `${Math.round(secs / 60)} min`;
  return `${(secs / 3600).toFixed(1)} h`;
}

const W = 720;
const H = 220;
const PAD = { l: 36, r: 8, t: 8, b: 22 };

// In use per bucket: the band between low and high water, the time-weighted average, the seat
// limit and (when the license has one) the overdraft limit.
function inUseChart(buckets, license) {
  const n = buckets.length;
  const overdraft = license.overdraft || 0;
  const top = Math.max(1, ...buckets.map((b) => Math.max(b.high_water, (b.seats_max ?? b.seats) + overdraft)));
  const x = (i) => PAD.l + ((W - PAD.l - PAD.r) * i) / Math.max(1, n);
  const y = (v) => H - PAD.b - ((H - PAD.t - PAD.b) * v) / top;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", id: "chart-in-use", role: "img", "aria-labelledby": "chart-in-use-title" },
    s("title", { id: "chart-in-use-title" }, "Seats in use over time: high and low water, average, seat limit"));
  svg.append(axis(top, y));
  const step = (pick) => buckets.map((b, i) => `${i ? "L" : "M"}${x(i)},${y(pick(b))}H${x(i + 1)}`).join("");
  if (n) {
    const hi = buckets.map((b, i) => `${x(i)},${y(b.high_water)} ${x(i + 1)},${y(b.high_water)}`).join(" ");
    const lo = buckets.map((b, i) => `${x(i + 1)},${y(b.low_water)} ${x(i)},${y(b.low_water)}`).reverse().join(" ");
    svg.append(s("polygon", { points: `${hi} ${lo}`, class: "band" }));
    svg.append(s("path", { d: step((b) => b.average_in_use), class: "avg" }));
    svg.append(s("path", { d: step((b) => b.seats), class: "limit" }));
    // A bucket before the license existed has no seats, and no overdraft either.
    if (overdraft) svg.append(s("path", { d: step((b) => (b.seats ? b.seats + overdraft : 0)), class: "overdraft" }));
    buckets.forEach((b, i) => {
      svg.append(s("rect", { x: x(i), y: PAD.t, width: Math.max(1, x(i + 1) - x(i)), height: H - PAD.t - PAD.b, class: "hit", "data-high-water": b.high_water },
        s("title", {}, `${when(b.start)}: high ${b.high_water}, low ${b.low_water}, average ${num(b.average_in_use)}, seats ${b.seats}, opens ${b.opens}, denials ${b.denials}, distinct users ${b.distinct_users}`)));
    });
    svg.append(s("text", { x: PAD.l, y: H - 6, class: "tick" }, when(buckets[0].start)));
    svg.append(s("text", { x: W - PAD.r, y: H - 6, class: "tick end" }, when(buckets[n - 1].end)));
  }
  const legend = h("p", { class: "legend" },
    h("span", { class: "key band" }), "high–low water ",
    h("span", { class: "key avg" }), "average ",
    h("span", { class: "key limit" }), "seats",
    overdraft ? [" ", h("span", { class: "key overdraft" }), "seats + overdraft"] : "");
  return h("figure", {}, svg, legend);
}

function axis(top, y) {
  const g = s("g", { class: "axis" });
  const stepv = Math.max(1, Math.ceil(top / 4));
  for (let v = 0; v <= top; v += stepv) {
    g.append(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }));
    g.append(s("text", { x: PAD.l - 4, y: y(v) + 4, class: "tick end" }, v));
  }
  return g;
}

function barChart(items, id, title) {
  const n = items.length;
  const top = Math.max(1, ...items.map((i) => i.value));
  const y = (v) => H - PAD.b - ((H - PAD.t - PAD.b) * v) / top;
  const bw = (W - PAD.l - PAD.r) / Math.max(1, n);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", id: `chart-${id}`, role: "img", "aria-label": title }, s("title", {}, title));
  svg.append(axis(top, y));
  items.forEach((it, i) => {
    svg.append(s("rect", { x: PAD.l + i * bw + 1, y: y(it.value), width: Math.max(1, bw - 2), height: H - PAD.b - y(it.value), class: "bar" },
      s("title", {}, `${it.label.includes("T") ? when(it.label) : it.label}: ${num(it.value)}`)));
  });
  return h("figure", {}, svg);
}

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

function heatmap(cells) {
  const top = Math.max(1, ...cells.map((c) => c.high_water));
  const cw = (W - 40) / 24;
  const ch = 20;
  const svg = s("svg", { viewBox: `0 0 ${W} ${ch * 7 + 20}`, class: "chart heat", id: "chart-heatmap", role: "img", "aria-label": "Peak seats in use by weekday and hour (UTC)" });
  const at = new Map(cells.map((c) => [`${c.weekday}:${c.hour}`, c.high_water]));
  DAYS.forEach((d, wd) => {
    svg.append(s("text", { x: 0, y: wd * ch + 14, class: "tick" }, d));
    for (let hr = 0; hr < 24; hr++) {
      const v = at.get(`${wd}:${hr}`) || 0;
      svg.append(s("rect", { x: 40 + hr * cw, y: wd * ch, width: cw - 1, height: ch - 1, class: "cell", "fill-opacity": v ? 0.15 + (0.85 * v) / top : 0.04 },
        s("title", {}, `${d} ${String(hr).padStart(2, "0")}:00 UTC: peak ${v}`)));
    }
  });
  for (let hr = 0; hr < 24; hr += 3) svg.append(s("text", { x: 40 + hr * cw, y: ch * 7 + 14, class: "tick" }, hr));
  return h("figure", {}, svg);
}

// ---- the audit log ----

// The audit log's kinds of events, as this server names them (its page carries the list).
const KINDS = document.querySelector('meta[name="leasehold-audit-kinds"]').content.split(",");

function auditView() {
  const license = h("input", { id: "audit-license", placeholder: "license id", size: 20 });
  const user = h("input", { id: "audit-user", placeholder: "username", size: 12 });
  const kind = h("select", { id: "audit-kind" }, h("option", { value: "" }, "every event"), KINDS.map((k) => h("option", { value: k }, k)));
  const now = new Date();
  const from = h("input", { type: "datetime-local", id: "audit-from", value: localInput(new Date(now - 86400e3)) });
  const to = h("input", { type: "datetime-local", id: "audit-to" });
  const csv = h("a", { id: "audit-csv", class: "button", download: "audit.csv" }, "Export CSV");
  const jsonl = h("a", { id: "audit-jsonl", class: "button", download: "audit.jsonl" }, "Export JSON lines");
  const tbody = h("tbody");
  const more = h("button", { type: "button", id: "audit-more", hidden: true }, "Load more");
  const note = h("p", { class: "muted", role: "status" });
  let cursor = null;
  const params = () => {
    const p = new URLSearchParams({ account_id: ACCOUNT });
    if (license.value.trim()) p.set("license_id", license.value.trim());
    if (user.value.trim()) p.set("username", user.value.trim());
    if (kind.value) p.set("event", kind.value);
    if (from.value) p.set("from", new Date(from.value).toISOString());
    if (to.value) p.set("to", new Date(to.value).toISOString());
    return p;
  };
  const load = async (append) => {
    const p = params();
    csv.href = `/v1/audit?${p}&format=csv&limit=1000`;
    jsonl.href = `/v1/audit?${p}&format=jsonl&limit=1000`;
    p.set("limit", "100");
    if (append && cursor) p.set("cursor", cursor);
    try {
      const page = await api("GET", `/v1/audit?${p}`);
      const rows = page.events.map((e) => h("tr", {},
        h("td", {}, h("time", { datetime: e.at }, when(e.at))),
        h("td", {}, e.event), h("td", {}, e.license_id.slice(0, 8)), h("td", {}, e.username || ""),
        h("td", {}, e.detail || ""), h("td", {}, e.actor || ""), h("td", {}, e.client_addr || "")));
      if (append) tbody.append(...rows);
      else tbody.replaceChildren(...rows);
      cursor = page.next_cursor;
      more.hidden = !page.has_more;
      note.textContent = tbody.children.length ? `${tbody.children.length} events` : "No events match.";
    } catch (e) {
      note.textContent = `${e.code}: ${e.message}`;
    }
  };
  more.addEventListener("click", () => load(true));
  const form = h("form", { class: "range", id: "audit-filters" },
    h("label", {}, "License ", license), h("label", {}, "User ", user), h("label", {}, "Event ", kind),
    h("label", {}, "From ", from), h("label", {}, "To ", to), h("button", { type: "submit" }, "Filter"), csv, jsonl);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(false);
  });
  app.replaceChildren(h("h1", {}, "Audit log"), form, note,
    h("table", { id: "audit" }, h("thead", {}, h("tr", {}, ["Time", "Event", "License", "User", "Detail", "Actor", "Client"].map((t) => h("th", { scope: "col" }, t)))), tbody),
    more);
  load(false);
}

// ---- routing ----

async function route() {
  generation++;
  stopLive();
  const hash = window.location.hash || "#/";
  const [, view, arg] = hash.split("/");
  try {
    if (view === "license" && arg) await licenseView(decodeURIComponent(arg));
    else if (view === "users") await usersView();
    else if (view === "audit") auditView();
    else await licensesView();
  } catch (e) {
    showError(app, e);
  }
  const title = app.querySelector("h1");
  if (title) title.setAttribute("tabindex", "-1");
}

window.addEventListener("hashchange", route);
route();

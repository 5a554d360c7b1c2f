// The operator's page: it reads the event stream (a snapshot, then the
// machines that changed) and renders with textContent only, since what a
// machine reports is data from the LAN, never markup.
"use strict";

const state = { machines: new Map(), summary: null, events: [], skew: 0 };
const STAGES = ["dhcp", "tftp", "ipxe", "client", "network", "menu", "download", "seeding", "booting", "failed", "lost"];
const JITTER = 1.25; // clients report within 0.75–1.25 intervals (netboot/registry)

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function bytes(n) {
  if (!n) return "0";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function rate(bps) { return bytes(Math.round(bps || 0)) + "/s"; }

function dur(ms) {
  if (ms < 0 || !isFinite(ms)) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
}

const now = () => Date.now() + state.skew;
const t = (s) => (s ? Date.parse(s) : 0);
const zero = (s) => !s || s.startsWith("0001-");

function pinned(m) { return m.stage === "failed" || m.stage === "lost"; }

function sorted() {
  const key = (m) => (m.name ? m.name : "~" + m.mac);
  return [...state.machines.values()].sort((a, b) => {
    if (pinned(a) !== pinned(b)) return pinned(a) ? -1 : 1;
    return key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
  });
}

function renderSummary() {
  const s = state.summary;
  if (!s) return;
  $("done").textContent = s.done;
  $("total").textContent = s.total;
  $("elapsed").textContent = zero(s.first_seen) ? "–" : dur(now() - t(s.first_seen));
  $("eta").textContent = zero(s.eta) ? "–" : "in " + dur(t(s.eta) - now());
  $("server-bps").textContent = rate(s.server_bps);
  $("peers-bps").textContent = rate(s.peers_bps);
  $("peer-share").textContent = (100 * (s.peer_share || 0)).toFixed(1) + "% (" + bytes(s.from_peers) + " of " + bytes(s.from_peers + s.from_server) + ")";
  const ul = $("stages");
  ul.replaceChildren(...STAGES.map((st) => {
    const n = (s.stages && s.stages[st]) || 0;
    const li = el("li", st, st + (n ? "" : " zero"));
    li.append(el("b", n));
    return li;
  }));
  const tb = $("oses").tBodies[0];
  tb.replaceChildren(...(s.os || []).map((o) => {
    const tr = el("tr");
    tr.append(el("td", o.name), el("td", o.downloading, "num"), el("td", o.seeding, "num"));
    return tr;
  }));
}

function row(m) {
  const tr = el("tr");
  tr.dataset.mac = m.mac;
  tr.dataset.stage = m.stage;
  if (pinned(m)) tr.className = "pinned";
  const stage = el("td", m.stage === "lost" && m.lost_from ? "lost (" + m.lost_from + ")" : m.stage, "stage");
  if (!zero(m.stage_since)) stage.append(el("span", dur(now() - t(m.stage_since)), "stage-since"));
  const prog = el("td", null, "progress");
  if (m.bytes_total > 0) {
    const bar = el("progress");
    bar.max = 1;
    bar.value = m.progress || 0;
    prog.append(bar, el("span", " " + Math.floor(100 * (m.progress || 0)) + "% " + (m.stage === "download" ? rate(m.rate_bps) : "")));
  }
  const age = now() - t(m.last_seen);
  const ageCell = el("td", dur(age) + " ago", "age num");
  if (m.report_interval_ms > 0) {
    const missed = age / (m.report_interval_ms * JITTER);
    if (missed > 2) ageCell.classList.add("red");
    else if (missed > 1) ageCell.classList.add("amber");
  }
  tr.append(el("td", m.name || ""), el("td", m.mac), el("td", m.ip || ""), el("td", m.arch || ""), el("td", m.os || ""),
    stage, prog, el("td", bytes(m.from_peers), "num"), el("td", bytes(m.from_seeder), "num"),
    el("td", bytes(m.from_webseed), "num"), el("td", bytes(m.uploaded), "num"), el("td", m.peers || 0, "num"),
    ageCell, el("td", m.message || "", "msg"));
  return tr;
}

function renderMachines() {
  $("machines").tBodies[0].replaceChildren(...sorted().map(row));
}

function renderEvents() {
  $("events").replaceChildren(...state.events.slice().reverse().map((e) => {
    const when = new Date(t(e.at)).toLocaleTimeString();
    const who = e.name || e.mac;
    return el("li", when + "  " + who + ": " + (e.from || "new") + " → " + e.to + (e.message ? " — " + e.message : ""), e.to);
  }));
}

function render() { renderSummary(); renderMachines(); renderEvents(); }

function apply(msg, snapshot) {
  state.skew = t(msg.now) - Date.now();
  if (snapshot) {
    state.machines.clear();
    state.events = [];
  }
  for (const m of msg.machines) state.machines.set(m.mac, m);
  for (const mac of msg.removed || []) state.machines.delete(mac);
  state.summary = msg.summary;
  state.events = state.events.concat(msg.events).slice(-50);
  render();
}

function connect() {
  const es = new EventSource("/api/v1/events");
  const conn = $("conn");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
  es.addEventListener("snapshot", (e) => apply(JSON.parse(e.data), true));
  es.addEventListener("changes", (e) => apply(JSON.parse(e.data), false));
}

connect();
// Ages and times in stage move on between messages.
setInterval(render, 1000);

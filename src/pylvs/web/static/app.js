// pylvs dashboard: one page fed by server-sent events (stream), editing through the control API (api/).
"use strict";

const HISTORY = 60;          // points kept per sparkline (one per state push, about a minute)
const history = new Map();   // key -> array of numbers
const services = new Map();  // service id -> {el, dests: Map(dest id -> row)}
let token = sessionStorage.getItem("pylvs-token") || "";
let writable = false;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function human(n) {
  // ipvsadm prints plain integers; the summary line is friendlier with K/M/G.
  const units = ["", "K", "M", "G", "T"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : String(n)) + units[i];
}

function message(text, error = false) {
  const m = $("#message");
  m.textContent = text;
  m.className = error ? "error" : "";
}

// -- sparklines -----------------------------------------------------------------------------------
function push(key, value) {
  let h = history.get(key);
  if (!h) { h = []; history.set(key, h); }
  h.push(value);
  if (h.length > HISTORY) h.shift();
  return h;
}

function spark(cls) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark " + cls);
  svg.setAttribute("viewBox", `0 0 ${HISTORY - 1} 20`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.append(document.createElementNS("http://www.w3.org/2000/svg", "polyline"));
  return svg;
}

function drawSpark(svg, values, title) {
  const max = Math.max(1, ...values);
  const off = HISTORY - values.length;
  const pts = values.map((v, i) => `${off + i},${(20 - (v / max) * 19).toFixed(1)}`).join(" ");
  svg.firstChild.setAttribute("points", pts);
  svg.setAttribute("aria-label", title);
  let t = svg.querySelector("title");
  if (!t) { t = document.createElementNS("http://www.w3.org/2000/svg", "title"); svg.append(t); }
  t.textContent = title;
}

// -- services and real servers ---------------------------------------------------------------------
function serviceCard(s) {
  const card = el("div", { class: "svc", "data-sid": s.id });
  const head = el("div", { class: "svc-head" },
    el("span", { class: "svc-title" }),
    el("span", { class: "svc-sched" }),
    el("span", { class: "svc-rates" }),
    spark("cps"), spark("bytes"));
  const table = el("table", { class: "dests" },
    el("thead", {}, el("tr", {},
      ...["Server", "Forward", "Weight", "ActiveConn", "InActConn", "Health", "Conn/s", "last minute", ""].map((h) => el("th", {}, h)))),
    el("tbody"));
  card.append(head, table);
  return { el: card, dests: new Map() };
}

function destRow(sid, d) {
  const weight = el("input", { type: "number", min: 0, value: d.weight, title: "new weight" });
  const tr = el("tr", { class: "dest", "data-sid": sid, "data-did": d.id },
    el("td", { class: "server" }, d.id),
    el("td", { class: "fwd" }),
    el("td", { class: "weight num" }),
    el("td", { class: "active num" }),
    el("td", { class: "inactive num" }),
    el("td", { class: "health" }),
    el("td", { class: "cps num" }),
    el("td", {}, spark("cps")),
    el("td", {}, el("div", { class: "actions" },
      weight,
      el("button", { type: "button", class: "set", onclick: () => setWeight(sid, d.id, Number(weight.value)) }, "Set"),
      el("button", { type: "button", class: "quiesce", onclick: () => quiesce(sid, d.id) }, "Quiesce"),
      el("button", { type: "button", class: "restore", onclick: () => restore(sid, d.id) }, "Restore"))));
  tr.weightInput = weight;
  return tr;
}

function setCell(tr, cls, text) {
  const td = tr.querySelector("td." + cls);
  if (td.textContent !== String(text)) td.textContent = text;
  return td;
}

function renderState(st) {
  writable = st.writable;
  const [conns, inpkts, outpkts, inbytes, outbytes] = st.stats;
  const [cps, inpps, outpps, inbps, outbps] = st.rates;
  $("#summary").textContent =
    `${st.services.length} services · engine ${st.engine || "?"} · ${human(conns)} conns, ` +
    `${human(inpkts)}/${human(outpkts)} pkts, ${human(inbytes)}B/${human(outbytes)}B · ` +
    `${cps} conn/s, ${inpps}/${outpps} pkt/s, ${human(inbps)}B/${human(outbps)}B/s`;
  const box = $("#services");
  const seen = new Set();
  if (!st.services.length) box.replaceChildren(el("p", { class: "empty" }, "No virtual services."));
  else box.querySelector(".empty")?.remove();
  let prev = null;
  for (const s of st.services) {
    seen.add(s.id);
    let svc = services.get(s.id);
    if (!svc) { svc = serviceCard(s); services.set(s.id, svc); }
    // Keep the daemon's order (ipvsadm's listing order).
    const want = prev ? prev.nextSibling : box.firstChild;
    if (want !== svc.el) box.insertBefore(svc.el, want);
    prev = svc.el;
    svc.el.querySelector(".svc-title").textContent = s.title;
    svc.el.querySelector(".svc-sched").textContent = s.scheduler + (s.flags ? " " + s.flags : "");
    svc.el.querySelector(".svc-rates").textContent =
      `${s.rates[0]} conn/s · ${s.rates[1]}/${s.rates[2]} pkt/s · ${human(s.rates[3])}B/${human(s.rates[4])}B/s`;
    const sp = svc.el.querySelectorAll(".svc-head svg");
    drawSpark(sp[0], push("c" + s.id, s.rates[0]), "connections per second");
    drawSpark(sp[1], push("b" + s.id, s.rates[3] + s.rates[4]), "bytes per second (in + out)");
    const tbody = svc.el.querySelector("tbody");
    const dseen = new Set();
    let dprev = null;
    for (const d of s.dests) {
      dseen.add(d.id);
      let tr = svc.dests.get(d.id);
      if (!tr) { tr = destRow(s.id, d); svc.dests.set(d.id, tr); }
      const dwant = dprev ? dprev.nextSibling : tbody.firstChild;
      if (dwant !== tr) tbody.insertBefore(tr, dwant);
      dprev = tr;
      tr.config = d.config;
      if (document.activeElement !== tr.weightInput) tr.weightInput.value = d.weight;
      setCell(tr, "fwd", d.fwd);
      setCell(tr, "weight", d.weight);
      setCell(tr, "active", d.active);
      setCell(tr, "inactive", d.inactive);
      setCell(tr, "cps", d.rates[0]);
      const h = setCell(tr, "health", d.health || "-");
      h.className = "health" + (d.health ? " health-" + d.health : "");
      h.title = d.checker ? `${d.checker}: last check ${d.last_ok === null ? "pending" : d.last_ok ? "passed" : "failed"}` : "";
      drawSpark(tr.querySelector("svg"), push("d" + s.id + d.id, d.rates[0]), "connections per second");
    }
    for (const [id, tr] of svc.dests) if (!dseen.has(id)) { tr.remove(); svc.dests.delete(id); }
  }
  for (const [id, svc] of services) if (!seen.has(id)) { svc.el.remove(); services.delete(id); }
  $("#mode").textContent = !writable ? "read-only (no API token on the daemon)" : token ? "unlocked" : "read-only";
  $("#mode").className = writable && token ? "rw" : "";
  document.body.classList.toggle("rw", writable && !!token);
  $("#auth input").hidden = $("#unlock").hidden = !writable || !!token;
  $("#lock").hidden = !token;
}

// -- events ----------------------------------------------------------------------------------------
function addEvent(ev) {
  const list = $("#events");
  if (list.querySelector(`li[data-seq="${ev.seq}"]`)) return;
  const t = new Date(ev.time * 1000);
  const li = el("li", { "data-seq": ev.seq, value: ev.seq },
    el("time", { dateTime: t.toISOString() }, t.toLocaleTimeString()),
    el("span", { class: "ev-source" }, ev.source),
    el("span", { class: "ev-kind" }, ev.kind),
    el("span", { class: "ev-detail" }, ev.detail));
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

// -- connections -----------------------------------------------------------------------------------
async function refreshConnections() {
  const q = $("#conn-filter").value;
  try {
    const r = await fetch("connections?limit=200&q=" + encodeURIComponent(q));
    const data = await r.json();
    const rows = data.connections.map((c) => el("tr", {},
      el("td", {}, c.proto), el("td", {}, `${String(Math.floor(c.expires / 60)).padStart(2, "0")}:${String(c.expires % 60).padStart(2, "0")}`),
      el("td", {}, c.state), el("td", {}, c.client), el("td", {}, c.virtual), el("td", {}, c.server)));
    $("#conns tbody").replaceChildren(...rows);
    $("#conn-count").textContent = `(${data.matched} of ${data.total}${data.matched > rows.length ? ", first " + rows.length : ""})`;
  } catch (e) { /* the stream's dot tells the operator the daemon is away */ }
}

// -- changes through the control API --------------------------------------------------------------
async function api(method, path, body) {
  const r = await fetch("api/" + path, {
    method,
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json", "X-Pylvs-Source": "api" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch (e) { /* empty body */ }
  if (!r.ok) throw new Error(data.message ? `${data.message}${data.detail ? " (" + data.detail + ")" : ""}` : `HTTP ${r.status}`);
  return data;
}

function findRow(sid, did) {
  return services.get(sid)?.dests.get(did);
}

async function setWeight(sid, did, weight) {
  const tr = findRow(sid, did);
  if (!tr) return;
  if (!Number.isInteger(weight) || weight < 0) { message("the weight must be a whole number, 0 or more", true); return; }
  try {
    await api("PUT", `services/${encodeURIComponent(sid)}/dests/${encodeURIComponent(did)}`, { ...tr.config, weight });
    message(`${did} of ${sid}: weight ${weight}`);
  } catch (e) { message(`${did}: ${e.message}`, true); }
}

function quiesce(sid, did) {
  const tr = findRow(sid, did);
  if (!tr) return;
  if (tr.config.weight > 0) localStorage.setItem(`pylvs-weight ${sid} ${did}`, tr.config.weight);
  setWeight(sid, did, 0);
}

function restore(sid, did) {
  const w = Number(localStorage.getItem(`pylvs-weight ${sid} ${did}`) || 1);
  setWeight(sid, did, w);
}

$("#auth").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  try {
    await api("GET", "status");
    sessionStorage.setItem("pylvs-token", token);
    message("unlocked: weight changes go to the daemon's control API");
  } catch (e) {
    token = "";
    message("token refused: " + e.message, true);
  }
  $("#token").value = "";
  if (lastState) renderState(lastState);
});

$("#lock").addEventListener("click", () => {
  token = "";
  sessionStorage.removeItem("pylvs-token");
  message("locked: read-only");
  if (lastState) renderState(lastState);
});

// -- live updates ----------------------------------------------------------------------------------
let lastState = null;

function connect() {
  const es = new EventSource("stream");
  es.addEventListener("open", () => $("#live").className = "dot on");
  es.addEventListener("error", () => $("#live").className = "dot off");
  es.addEventListener("state", (m) => { lastState = JSON.parse(m.data); renderState(lastState); });
  es.addEventListener("events", (m) => JSON.parse(m.data).forEach(addEvent));
  es.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
}

$("#conn-filter").addEventListener("input", refreshConnections);
setInterval(refreshConnections, 2000);
refreshConnections();
connect();

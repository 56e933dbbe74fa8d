// The esctl console: polls /api/overview, streams /api/tail, and sends
// replay and purge as POST requests carrying the token header.
"use strict";

const params = new URLSearchParams(location.hash.slice(1));
if (params.get("token")) {
  sessionStorage.setItem("esctl-token", params.get("token"));
  history.replaceState(null, "", location.pathname); // keep the token out of the address bar
}
const token = () => sessionStorage.getItem("esctl-token") || "";
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const dash = (n) => (n < 0 ? "–" : String(n));

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "X-Esctl-Token": token() || "console", ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

let busy = false;
async function act(what, group, id) {
  const label = id ? `${what} dead letter ${id} of ${group}` : `${what} every dead letter of ${group}`;
  if (what === "purge" && !confirm(`Purge: ${label}? The events will not be handled.`)) return;
  busy = true;
  try {
    const r = await api("POST", `/api/dlq/${what}`, { group, id: id || "" });
    $("#status").textContent = `${what}: ${JSON.stringify(r)}`;
  } catch (err) {
    showError(err);
  } finally {
    busy = false;
    refresh();
  }
}

async function show(group, id) {
  try {
    const r = await api("GET", `/api/deadletters/${encodeURIComponent(group)}/${encodeURIComponent(id)}`);
    $("#detail-body").textContent = JSON.stringify(r, null, 2);
    $("#detail").showModal();
  } catch (err) {
    showError(err);
  }
}

function showError(err) {
  $("#errors").textContent = String(err.message || err);
}

function renderGroups(groups) {
  const body = $("#groups tbody");
  body.replaceChildren(...groups.map((g) => el("tr", { "data-group": g.group },
    el("td", {}, g.group), el("td", { class: "num" }, dash(g.events)), el("td", { class: "num backlog" }, dash(g.backlog)),
    el("td", { class: "num" }, dash(g.pending)), el("td", { class: "num" }, dash(g.retrying)),
    el("td", { class: "num" }, dash(g.consumers)),
    el("td", { class: "num" }, el("span", { class: "badge " + (g.dead_letters > 0 ? "bad" : "ok") }, g.dead_letters)))));
  if (!groups.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "no bus configured, or no group yet")));
}

function renderDeadLetters(byGroup) {
  const root = $("#dlq");
  const groups = Object.keys(byGroup).sort();
  root.replaceChildren(...groups.map((g) => {
    const recs = byGroup[g];
    const head = el("h3", {}, g, el("span", { class: "badge " + (recs.length ? "bad" : "ok"), "data-count": g }, recs.length),
      el("span", { class: "actions" },
        el("button", { type: "button", "data-action": "replay-all", "data-group": g, disabled: recs.length ? null : "", onclick: () => act("replay", g) }, "replay all"),
        el("button", { type: "button", class: "danger", "data-action": "purge-all", "data-group": g, onclick: () => act("purge", g) }, "purge all")));
    if (!recs.length) head.querySelectorAll("button").forEach((b) => (b.disabled = true));
    const table = el("table", { class: "dlq", "data-group": g },
      el("thead", {}, el("tr", {}, ...["time", "reason", "type", "aggregate", "attempts", "handlers", "error", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...(recs.length ? recs.map((r) => el("tr", { "data-id": r.id },
        el("td", {}, new Date(r.time).toLocaleTimeString()), el("td", {}, el("span", { class: "badge bad" }, r.reason)),
        el("td", {}, r.event_type || "–"), el("td", {}, `${r.aggregate_type || ""}-${r.aggregate_id || ""}`),
        el("td", { class: "num" }, r.attempts), el("td", {}, (r.handlers || []).join(", ") || "–"),
        el("td", { class: "err" }, r.error),
        el("td", {},
          el("button", { type: "button", onclick: () => show(g, r.id) }, "show"), " ",
          el("button", { type: "button", "data-action": "replay", onclick: () => act("replay", g, r.id) }, "replay"), " ",
          el("button", { type: "button", class: "danger", "data-action": "purge", onclick: () => act("purge", g, r.id) }, "purge"))))
        : [el("tr", {}, el("td", { colspan: 8, class: "empty" }, "no dead letters"))])));
    return el("div", { class: "group" }, head, table);
  }));
  if (!groups.length) root.replaceChildren(el("div", { class: "empty" }, "no groups"));
}

function renderFollowers(rows, head) {
  $("#head").textContent = head ? `store head ${head}` : "";
  const body = $("#followers tbody");
  body.replaceChildren(...rows.map((r) => el("tr", { "data-name": r.name },
    el("td", {}, r.name), el("td", { class: "num position" }, r.position), el("td", { class: "num" }, r.head),
    el("td", { class: "num lag " + (r.lag ? "lag-n" : "lag-0") }, r.lag), el("td", {}, r.state), el("td", {}, r.owner || "–"),
    el("td", {}, new Date(r.updated_at).toLocaleTimeString()))));
  if (!rows.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "no store configured, or no checkpoint yet")));
}

async function refresh() {
  if (busy) return;
  try {
    const ov = await api("GET", "/api/overview");
    $("#where").textContent = [ov.bus, ov.store].filter(Boolean).join(" · ");
    renderGroups(ov.groups);
    renderDeadLetters(ov.dead_letters);
    renderFollowers(ov.followers, ov.head);
    $("#errors").textContent = (ov.errors || []).join("\n");
    $("#status").textContent = "updated " + new Date(ov.time).toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (err) {
    $("#status").textContent = "disconnected";
    showError(err);
  }
}

// Live tail over server-sent events; the token goes in the query, the
// only place EventSource can put it.
let paused = false;
function startTail() {
  const src = new EventSource("/api/tail?token=" + encodeURIComponent(token()));
  src.addEventListener("ready", () => ($("#tail-state").textContent = "listening"));
  src.addEventListener("failure", (m) => ($("#tail-state").textContent = JSON.parse(m.data).error));
  src.addEventListener("event", (m) => {
    if (paused) return;
    const ev = JSON.parse(m.data);
    const f = $("#tail-filter").value.trim();
    if (f && ev.type !== f && ev.aggregate_id !== f && `${ev.aggregate_type}-${ev.aggregate_id}` !== f) return;
    const list = $("#tail");
    list.prepend(el("li", { "data-type": ev.type },
      el("span", { class: "t" }, new Date(ev.occurred_at).toLocaleTimeString()), " ",
      el("span", { class: "ty" }, ev.type), " ", el("span", { class: "ag" }, `${ev.aggregate_type}-${ev.aggregate_id}`),
      ` v${ev.version} `, JSON.stringify(ev.data)));
    while (list.children.length > 200) list.lastChild.remove();
  });
  src.onerror = () => ($("#tail-state").textContent = "reconnecting…");
}

$("#tail-pause").addEventListener("click", (e) => { paused = !paused; e.target.textContent = paused ? "resume" : "pause"; });
$("#tail-clear").addEventListener("click", () => $("#tail").replaceChildren());
refresh();
setInterval(refresh, 1000);
startTail();

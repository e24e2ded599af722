// The cortex status page: reads GET /ui/state every second and redraws; no framework, no build.
// The key (when the gateway needs one) is kept in sessionStorage and sent as a Bearer token.
"use strict";

const KEY = "cortex.key";
const EVERY_MS = 1000;
const RESIDENT = new Set(["loading", "loaded", "unloading"]);
let timer = null;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name === "type" || name === "title") node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function headers() {
  const key = sessionStorage.getItem(KEY);
  const h = { "content-type": "application/json" };
  if (key) h.authorization = "Bearer " + key;
  return h;
}

function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString() : "–";
}

function ago(ts, now) {
  if (!ts) return "–";
  const s = Math.max(0, now - ts);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function num(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

function say(text, error) {
  const m = $("message");
  m.textContent = text || "";
  m.className = error ? "error" : "";
}

function askKey(why) {
  clearTimeout(timer);
  $("login").hidden = false;
  $("login-error").textContent = why || "";
  $("key").focus();
}

async function admin(path, body) {
  say("…");
  try {
    const r = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body || {}) });
    const answer = await r.json().catch(() => ({}));
    if (r.ok) say(path.replace("/admin/", "") + ": done");
    else say((answer.error && answer.error.message) || "HTTP " + r.status, true);
  } catch (e) {
    say("the gateway did not answer: " + e, true);
  }
  refresh();
}

function button(label, action, path, body) {
  return el("button", { type: "button", "data-action": action, onclick: () => admin(path, body) }, label);
}

function fill(pct) {
  const bar = el("div", { class: "fill" });
  bar.style.width = pct + "%";  // through the CSSOM, which the page's CSP allows
  return bar;
}

function drawNodes(state) {
  const nodes = state.fleet.nodes.map((n) => {
    const badges = [el("span", { class: "badge " + (n.up ? "up" : "down") }, n.up ? "up" : "down")];
    if (n.cordoned && !n.draining) badges.push(el("span", { class: "badge cordoned" }, "cordoned"));
    if (n.draining) badges.push(el("span", { class: "badge draining" }, "draining"));
    const devices = n.devices.map((d) => {
      const free = d.memory_free_mb;
      const used = free === null ? null : d.memory_total_mb - free;
      const pct = used === null || !d.memory_total_mb ? 0 : Math.round((100 * used) / d.memory_total_mb);
      const util = d.utilization_pct === null ? "" : " · " + d.utilization_pct + " % busy";
      return el("div", { class: "device", "data-device": d.index },
        el("div", { class: "label" },
          el("span", {}, d.kind + " " + d.index + " " + d.name),
          el("span", {}, (used === null ? "?" : used) + " / " + d.memory_total_mb + " MiB" + util)),
        el("div", { class: "bar", title: pct + " % used" },
          fill(pct)));
    });
    const actions = el("div", { class: "node-actions admin-only" },
      n.cordoned
        ? button("uncordon", "uncordon", "/admin/nodes/" + encodeURIComponent(n.name) + "/uncordon")
        : button("cordon", "cordon", "/admin/nodes/" + encodeURIComponent(n.name) + "/cordon"),
      n.draining ? null : button("drain", "drain", "/admin/nodes/" + encodeURIComponent(n.name) + "/drain"));
    return el("div", { class: "node", "data-node": n.name },
      el("h3", {}, n.name, ...badges),
      el("div", { class: "label" }, n.endpoint + " · polled " + ago(n.last_poll, state.now) +
        " · " + n.load_unload_cycles + " load/unload cycles"),
      ...devices, state.admin ? actions : null);
  });
  $("nodes").replaceChildren(...nodes);
}

function drawModels(state) {
  const rows = [];
  for (const n of state.fleet.nodes) {
    for (const m of n.models) {
      const target = { model: m.id, node: n.name };
      let action = null;
      if (m.status === "loaded") action = button("unload", "unload", "/admin/models/unload", target);
      else if (m.status === "available" || m.status === "failed") {
        action = button("load", "load", "/admin/models/load", target);
      }
      rows.push(el("tr", { "data-model": m.id, "data-node": n.name },
        el("td", {}, m.id), el("td", {}, n.name),
        el("td", { class: "state state-" + m.status }, m.status),
        el("td", { class: "num" }, m.memory_mb === null || !RESIDENT.has(m.status) ? "–" : m.memory_mb + " MiB"),
        el("td", { class: "num" }, m.in_flight),
        el("td", { class: "num" }, state.queued[m.id] || 0),
        el("td", {}, ago(m.last_used, state.now)),
        el("td", {}, m.pinned ? "pinned" : ""),
        state.admin ? el("td", { class: "actions admin-only" }, action) : null));
    }
  }
  $("models").tBodies[0].replaceChildren(...rows);
}

function drawRequests(state) {
  $("requests").tBodies[0].replaceChildren(...state.requests.map((r) =>
    el("tr", {},
      el("td", {}, clock(r.at)), el("td", {}, r.model), el("td", {}, r.node), el("td", {}, r.dialect),
      el("td", { class: r.status >= 400 ? "status-err" : "" }, r.status),
      el("td", { class: "num" }, num(r.seconds, 3)),
      el("td", { class: "num" }, r.ttft_s === null ? "–" : num(r.ttft_s, 3) + " s"),
      el("td", { class: "num" }, r.completion_tokens === null ? "–" : r.completion_tokens),
      el("td", { class: "num" }, num(r.tokens_per_second, 1)))));
}

function drawEvents(state) {
  $("events").tBodies[0].replaceChildren(...state.events.map((e) =>
    el("tr", { class: e.kind === "load_failed" ? "status-err" : "" },
      el("td", {}, clock(e.at)), el("td", {}, e.kind.replace("_", " ")), el("td", {}, e.model),
      el("td", {}, e.node), el("td", { class: "num" }, num(e.seconds, 2)), el("td", {}, e.reason || ""))));
}

function draw(state) {
  document.body.classList.toggle("admin", state.admin);
  const up = state.fleet.nodes.filter((n) => n.up).length;
  $("summary").textContent = up + " of " + state.fleet.nodes.length + " nodes up · " +
    state.fleet.models.length + " models · " + clock(state.now);
  $("role").textContent = state.auth ? (state.admin ? "admin key" : "read only") : "";
  $("change-key").hidden = !state.auth;
  drawNodes(state);
  drawModels(state);
  drawRequests(state);
  drawEvents(state);
}

async function refresh() {
  clearTimeout(timer);
  let r;
  try {
    r = await fetch("/ui/state", { headers: headers(), cache: "no-store" });
  } catch (e) {
    $("summary").textContent = "the gateway does not answer";
    timer = setTimeout(refresh, 2 * EVERY_MS);
    return;
  }
  if (r.status === 401 || r.status === 403) {
    const had = sessionStorage.getItem(KEY);
    sessionStorage.removeItem(KEY);
    askKey(had ? "that key was refused" : "");
    return;
  }
  if (r.ok) draw(await r.json());
  else $("summary").textContent = "the gateway answered HTTP " + r.status;
  timer = setTimeout(refresh, EVERY_MS);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key").value = "";
  $("login").hidden = true;
  refresh();
});
$("change-key").addEventListener("click", () => askKey(""));
refresh();

// TrustChain dashboard: a read-only view over the verifier's dashboard API.
// Every value from the verifier (device ids, hostnames, reasons, IMA file paths) is put on the
// page as text (textContent), never as markup. The page only reads: GET requests, no forms.
"use strict";

const STATES = ["enrolled", "trusted", "untrusted", "timed_out", "quarantined", "decommissioned"];
const PAGE = 50;
const view = () => document.getElementById("view");
let current = { name: "", refresh: () => {}, onChange: () => {} };
let fleetQuery = { state: "", tier: "", q: "", offset: 0 };

// An element with text children only (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "id") node.id = value;
    else if (key === "href") node.setAttribute("href", value);
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "title") node.title = value;
    else if (key === "download") node.setAttribute("download", value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number"
      ? document.createTextNode(String(child)) : child);
  }
  return node;
}

function when(unixSeconds) {
  if (!unixSeconds) return "never";
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(".000Z", " UTC");
}

function whenMillis(ms) { return when(Math.floor(ms / 1000)); }

function stateBadge(state) {
  return el("span", { class: "state state-" + state, "data-field": "state" }, state);
}

async function getJson(path) {
  const response = await fetch(path, { method: "GET", credentials: "same-origin" });
  if (!response.ok) throw new Error(path + ": " + response.status + " " + (await response.text()));
  return response.json();
}

function show(...nodes) {
  view().replaceChildren(...nodes);
}

function failure(error) {
  show(el("p", { class: "failed" }, "Could not load: " + error.message));
}

function deviceHref(id) { return "#/device/" + encodeURIComponent(id); }

// ---------------------------------------------------------------- fleet
function fleetRow(d) {
  return el("tr", { "data-device-id": d.device_id },
    el("td", { class: "mono" }, el("a", { href: deviceHref(d.device_id) }, d.device_id)),
    el("td", {}, d.hostname),
    el("td", {}, stateBadge(d.state)),
    el("td", {}, d.tier || "—"),
    el("td", { "data-field": "last" }, when(d.last_appraisal_unix)),
    el("td", { "data-field": "reason" }, d.reason));
}

function countCards(counts, prefix) {
  return el("div", { class: "cards" }, Object.entries(counts).map(([key, n]) =>
    el("div", { class: "card", "data-count": prefix + key },
      el("div", { class: "n" }, n), el("div", { class: "k" }, key || "no tier"))));
}

async function renderFleet() {
  const q = fleetQuery;
  const params = new URLSearchParams({ offset: q.offset, limit: PAGE, state: q.state, tier: q.tier, q: q.q });
  const data = await getJson("/api/fleet?" + params);
  const stateSelect = el("select", { "data-filter": "state" }, el("option", {}, ""), STATES.map(s => el("option", {}, s)));
  stateSelect.value = q.state;
  stateSelect.addEventListener("change", () => { q.state = stateSelect.value; q.offset = 0; current.refresh(); });
  const tierSelect = el("select", { "data-filter": "tier" }, el("option", {}, ""),
    Object.keys(data.by_tier).filter(t => t).map(t => el("option", {}, t)));
  tierSelect.value = q.tier;
  tierSelect.addEventListener("change", () => { q.tier = tierSelect.value; q.offset = 0; current.refresh(); });
  const search = el("input", { title: "device id, hostname or reason" });
  search.placeholder = "search id, hostname, reason";
  search.value = q.q;
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { q.q = search.value; q.offset = 0; current.refresh(); }, 300);
  });
  const rows = el("tbody", { id: "fleet-rows" }, data.devices.map(fleetRow));
  const prev = el("button", {}, "previous");
  prev.disabled = q.offset === 0;
  prev.addEventListener("click", () => { q.offset = Math.max(0, q.offset - PAGE); current.refresh(); });
  const next = el("button", {}, "next");
  next.disabled = q.offset + PAGE >= data.matching;
  next.addEventListener("click", () => { q.offset += PAGE; current.refresh(); });
  show(
    el("h2", {}, "Fleet ", el("span", { class: "muted" }, "(" + data.total + " devices)")),
    el("div", { id: "state-counts" }, countCards(data.by_state, "state:")),
    el("div", { id: "tier-counts" }, countCards(data.by_tier, "tier:")),
    el("div", { class: "filters" }, "State", stateSelect, "Tier", tierSelect, search),
    el("table", {}, el("thead", {}, el("tr", {}, ["Device", "Hostname", "State", "Tier", "Last appraisal", "Reason"].map(h => el("th", {}, h)))), rows),
    el("div", { class: "pager" }, prev, next,
      (data.matching ? (q.offset + 1) + "–" + Math.min(q.offset + PAGE, data.matching) : "0") + " of " + data.matching));
  if (search.value && document.activeElement !== search) { search.focus(); }
}

function bumpCount(key, delta) {
  for (const card of document.querySelectorAll("[data-count]")) {
    if (card.getAttribute("data-count") === key) {
      const n = card.querySelector(".n");
      n.textContent = String(Number(n.textContent) + delta);
    }
  }
}

let fleetRefresh = null;
function fleetChange(change) {
  bumpCount("state:" + change.previous, -1);
  bumpCount("state:" + change.current, 1);
  const rows = document.querySelectorAll("#fleet-rows tr");
  let shown = false;
  for (const row of rows) {
    if (row.getAttribute("data-device-id") !== change.device_id) continue;
    shown = true;
    row.querySelector("[data-field=state]").replaceWith(stateBadge(change.current));
    row.querySelector("[data-field=reason]").textContent = change.reason;
    row.querySelector("[data-field=last]").textContent = whenMillis(change.at_unix_millis);
  }
  // A device this page could show but does not (newly enrolled): read this page again, once
  // for a burst of changes.
  if (!shown && rows.length < PAGE && fleetRefresh === null) {
    fleetRefresh = setTimeout(() => { fleetRefresh = null; if (current.name === "fleet") current.refresh(); }, 1000);
  }
}

// ---------------------------------------------------------------- device
function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v === "" || v === null || v === undefined ? "—" : String(v))]));
}

async function renderDevice(id) {
  const d = await getJson("/api/devices/" + encodeURIComponent(id));
  const s = d.summary, i = d.identity, b = d.basis || {};
  const failures = d.failures.length === 0
    ? el("p", { class: "muted" }, "No failed rule: the device is not untrusted.")
    : el("table", { id: "failures" },
      el("thead", {}, el("tr", {}, ["Rule", "Event / entry / file", "Measured", "Expected", "Detail"].map(h => el("th", {}, h)))),
      el("tbody", {}, d.failures.map(f => el("tr", {},
        el("td", { class: "failed", "data-field": "rule" }, f.rule),
        el("td", { class: "mono" }, f.subject), el("td", { class: "mono" }, f.measured),
        el("td", { class: "mono" }, f.expected), el("td", {}, f.detail)))));
  const manifests = (b.manifests || []).map(m => el("li", {}, m.id + " signed by " + m.signer));
  show(
    el("h2", {}, "Device ", el("span", { class: "mono" }, s.device_id)),
    el("div", { class: "cards" },
      el("div", { class: "card" }, el("div", { class: "n", id: "device-state" }, stateBadge(s.state)), el("div", { class: "k" }, "state")),
      el("div", { class: "card" }, el("div", { class: "n" }, s.tier || "—"), el("div", { class: "k" }, "tier")),
      el("div", { class: "card" }, el("div", { class: "n" }, when(s.last_appraisal_unix)), el("div", { class: "k" }, "last appraisal"))),
    el("p", {}, "Reason: ", el("span", { id: "device-reason" }, s.reason || "—")),
    el("h3", {}, "Last verdict: failed rules"), failures,
    el("h3", {}, "Rested on"),
    kv([["trust list version", b.trust_list_version], ["policy", b.policy ? b.policy.name + " v" + b.policy.version : ""]]),
    el("ul", {}, manifests.length ? manifests : el("li", { class: "muted" }, "no manifests")),
    el("h3", {}, "Identity"),
    kv([["hostname", s.hostname], ["EK kind", i.ek_kind], ["EK certificate issuer", i.ek_certificate_issuer],
      ["EK certificate serial", i.ek_certificate_serial_hex], ["AK name", i.ak_name_hex],
      ["AK certificate SHA-256", i.ak_certificate_sha256], ["AK rotations", i.ak_rotations],
      ["mTLS certificate serial", i.client_certificate_serial_hex], ["enrolled", when(i.enrolled_at_unix)],
      ["model", i.model], ["firmware", i.firmware_version], ["agent", i.agent_version]]),
    el("h3", {}, "History"),
    el("ol", { class: "timeline", id: "history" }, d.history.slice().reverse().map(h =>
      el("li", { class: "k-" + h.kind }, el("span", { class: "when" }, whenMillis(h.at_unix_millis)),
        el("strong", {}, h.kind), " ", h.detail))));
}

// ---------------------------------------------------------------- alerts, trust, audit
let alertOffset = 0;
async function renderAlerts() {
  const data = await getJson("/api/alerts?" + new URLSearchParams({ offset: alertOffset, limit: PAGE }));
  const prev = el("button", {}, "newer");
  prev.disabled = alertOffset === 0;
  prev.addEventListener("click", () => { alertOffset = Math.max(0, alertOffset - PAGE); current.refresh(); });
  const next = el("button", {}, "older");
  next.disabled = alertOffset + PAGE >= data.matching;
  next.addEventListener("click", () => { alertOffset += PAGE; current.refresh(); });
  show(el("h2", {}, "Alerts ", el("span", { class: "muted" }, "(newest first)")),
    el("table", {}, el("thead", {}, el("tr", {}, ["When", "Kind", "Device", "Detail"].map(h => el("th", {}, h)))),
      el("tbody", { id: "alert-rows" }, data.alerts.map(a => el("tr", {},
        el("td", {}, whenMillis(a.at_unix_millis)), el("td", { class: "failed" }, a.kind),
        el("td", { class: "mono" }, a.device_id ? el("a", { href: deviceHref(a.device_id) }, a.device_id) : "—"),
        el("td", {}, a.detail))))),
    el("div", { class: "pager" }, prev, next, data.matching + " in the recent audit window"));
}

async function renderTrust() {
  const t = await getJson("/api/trust");
  const l = t.trust_list;
  show(el("h2", {}, "Trust documents"),
    el("h3", {}, "Active trust list"),
    l ? kv([["version", l.version], ["issued at", l.issued_at], ["maker CAs", l.maker_cas],
      ["admitted devices", l.admitted_devices || "every device chaining to a listed maker CA"],
      ["documents fingerprint", t.fingerprint]]) : el("p", { class: "failed" }, "No trust list is active."),
    el("h3", {}, "Manifest signers"),
    el("ul", {}, (l ? l.manifest_signers : []).map(s => el("li", {}, s.name + " ", el("span", { class: "mono" }, s.public_key)))),
    el("h3", {}, "Policy signers"),
    el("ul", {}, (l ? l.policy_signers : []).map(s => el("li", {}, s.name + " ", el("span", { class: "mono" }, s.public_key)))),
    el("h3", {}, "Manifests"),
    el("table", {}, el("thead", {}, el("tr", {}, ["Manifest", "Signed by", "Usable", "Note"].map(h => el("th", {}, h)))),
      el("tbody", {}, t.manifests.map(m => el("tr", {}, el("td", { class: "mono" }, m.id), el("td", {}, m.signer),
        el("td", { class: m.usable ? "ok" : "failed" }, m.usable ? "yes" : "no"), el("td", {}, m.note))))),
    el("h3", {}, "Policies"),
    el("table", {}, el("thead", {}, el("tr", {}, ["Policy", "Version", "Description"].map(h => el("th", {}, h)))),
      el("tbody", {}, t.policies.map(p => el("tr", {}, el("td", {}, p.name), el("td", {}, p.version), el("td", {}, p.description))))));
}

let auditFrom = null;
async function renderAudit() {
  const params = new URLSearchParams({ limit: PAGE });
  if (auditFrom !== null) params.set("from", auditFrom);
  const a = await getJson("/api/audit?" + params);
  const status = el("span", { id: "chain-status", class: "muted" }, "not checked");
  const check = el("button", {}, "Verify chain");
  check.addEventListener("click", async () => {
    status.textContent = "checking…";
    try {
      const v = await getJson("/api/audit/verify?from=1");
      status.className = v.intact ? "ok" : "failed";
      status.textContent = v.intact
        ? "intact: records " + v.first_sequence + "–" + v.last_sequence + ", " + v.checkpoints + " signed checkpoints"
        : "BROKEN: " + v.error;
    } catch (e) { status.className = "failed"; status.textContent = e.message; }
  });
  const fromInput = el("input", { title: "first sequence of the export" });
  fromInput.value = String(a.from);
  const exportLink = el("a", { href: "/api/audit/export?from=" + a.from, download: "" }, "Export from sequence");
  fromInput.addEventListener("input", () => {
    const n = Math.max(1, parseInt(fromInput.value, 10) || 1);
    exportLink.setAttribute("href", "/api/audit/export?from=" + n);
  });
  const older = el("button", {}, "older");
  older.disabled = a.from <= 1;
  older.addEventListener("click", () => { auditFrom = Math.max(1, a.from - PAGE); current.refresh(); });
  const newer = el("button", {}, "newer");
  newer.disabled = a.from + PAGE > a.head_sequence;
  newer.addEventListener("click", () => { auditFrom = a.from + PAGE; current.refresh(); });
  show(el("h2", {}, "Audit log"),
    kv([["head sequence", a.head_sequence], ["head hash", a.head_hash], ["signing key", a.signing_public_key]]),
    el("div", { class: "filters" }, check, status),
    el("div", { class: "filters" }, exportLink, fromInput, el("span", { class: "muted" }, "to the head, signed (verify offline with trustchain audit verify)")),
    el("table", {}, el("thead", {}, el("tr", {}, ["Seq", "When", "Kind", "Device", "Detail"].map(h => el("th", {}, h)))),
      el("tbody", {}, a.records.slice().reverse().map(r => el("tr", {}, el("td", {}, r.sequence), el("td", {}, whenMillis(r.at_unix_millis)),
        el("td", {}, r.kind), el("td", { class: "mono" }, r.device_id), el("td", {}, r.detail))))),
    el("div", { class: "pager" }, older, newer));
}

// ---------------------------------------------------------------- routing and live updates
function route() {
  const hash = location.hash || "#/fleet";
  const noop = () => {};
  const guard = render => () => render().catch(failure);
  if (hash.startsWith("#/device/")) {
    const id = decodeURIComponent(hash.slice("#/device/".length));
    current = { name: "device", refresh: guard(() => renderDevice(id)), onChange: c => { if (c.device_id === id) current.refresh(); } };
  } else if (hash === "#/alerts") {
    current = { name: "alerts", refresh: guard(renderAlerts), onChange: () => { if (alertOffset === 0) current.refresh(); } };
  } else if (hash === "#/trust") {
    current = { name: "trust", refresh: guard(renderTrust), onChange: noop };
  } else if (hash === "#/audit") {
    current = { name: "audit", refresh: guard(renderAudit), onChange: () => { if (auditFrom === null) current.refresh(); } };
  } else {
    current = { name: "fleet", refresh: guard(renderFleet), onChange: fleetChange };
  }
  current.refresh();
}

function live() {
  const badge = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { badge.className = "live on"; badge.textContent = "live"; });
  source.addEventListener("error", () => { badge.className = "live off"; badge.textContent = "reconnecting"; });
  source.addEventListener("change", event => {
    try { current.onChange(JSON.parse(event.data)); } catch (e) { console.error(e); }
  });
  // Changes were missed: read the page again (its data, not the page itself).
  source.addEventListener("resync", () => current.refresh());
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => { route(); live(); });

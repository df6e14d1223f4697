// Oxpecker admin dashboard. Talks only to the admin REST API (and reads /metrics for charts).
// The credentials live in this closure's memory: never in localStorage, sessionStorage or cookies.
"use strict";
(function () {
  const API = document.querySelector('meta[name="oxpecker-api"]').content || "/admin_rest";
  let auth = null; // the Authorization header value, in memory only
  let timer = null; // the current page's refresh timer
  let hosts = [];
  const $ = (sel) => document.querySelector(sel);

  // --- DOM helpers: text goes through textContent, never innerHTML ---
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (v !== false && v != null) el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function table(id, headers, rows) {
    return h("table", { id }, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
      h("tbody", {}, rows));
  }
  function status(text, ok) {
    const s = $("#status");
    s.textContent = text || "";
    s.className = ok === false ? "error" : "ok";
  }
  function duration(secs) {
    secs = Math.max(0, Math.floor(secs));
    const d = Math.floor(secs / 86400), hr = Math.floor(secs / 3600) % 24;
    const m = Math.floor(secs / 60) % 60, s = secs % 60;
    if (d) return `${d}d ${hr}h`;
    if (hr) return `${hr}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }
  function host() { return $("#host").value || ""; }
  // Two clicks to confirm a destructive action, without a modal dialog.
  function confirmButton(label, action, cls) {
    const b = h("button", { type: "button", class: cls || "danger" }, label);
    b.addEventListener("click", async () => {
      if (b.dataset.armed !== "1") {
        b.dataset.armed = "1";
        b.textContent = "Confirm " + label.toLowerCase();
        setTimeout(() => { b.dataset.armed = ""; b.textContent = label; }, 4000);
        return;
      }
      b.disabled = true;
      await action();
    });
    return b;
  }

  // --- the API ---
  async function api(method, path, body, opts) {
    opts = opts || {};
    const url = new URL(API + path, location.href);
    if (opts.host !== false && host()) url.searchParams.set("host", host());
    const init = { method, headers: { Authorization: auth }, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    let data = null;
    try { data = await resp.json(); } catch (_) { /* empty body */ }
    if (!resp.ok) {
      const msg = data && typeof data.result === "string" ? data.result : `${resp.status} ${resp.statusText}`;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return data ? data.result : null;
  }
  const enc = encodeURIComponent;
  // Runs an action, reports its result and re-renders the page.
  async function act(fn) {
    try {
      const r = await fn();
      status(typeof r === "string" ? r : "Done", true);
    } catch (e) {
      status(e.message, false);
    }
    await render();
  }

  // --- sign in and out ---
  $("#login-kind").addEventListener("change", () => {
    $("#login-user-label").hidden = $("#login-kind").value === "bearer";
  });
  $("#login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const kind = $("#login-kind").value;
    const user = $("#login-user").value.trim();
    const secret = $("#login-secret").value;
    auth = kind === "bearer" ? "Bearer " + secret
      : "Basic " + btoa(String.fromCharCode(...new TextEncoder().encode(user + ":" + secret)));
    $("#login-secret").value = "";
    try {
      const info = await api("GET", "/server", undefined, { host: false });
      const hl = await api("GET", "/hosts", undefined, { host: false });
      hosts = hl.hosts.filter((x) => x.configured).map((x) => x.host);
      $("#host").replaceChildren(...hosts.map((x) => h("option", { value: x }, x)));
      $("#whoami").textContent = (kind === "bearer" ? "token" : user) + " · " + info.name + " " + info.version;
      $("#login-error").textContent = "";
      $("#login-view").hidden = true;
      $("#app").hidden = false;
      if (!location.hash) location.hash = "#overview";
      await render();
    } catch (e) {
      auth = null;
      $("#login-error").textContent = e.status === 401 ? "Wrong credentials, or not an admin." : e.message;
    }
  });
  $("#logout").addEventListener("click", () => {
    auth = null;
    clearInterval(timer);
    chartState = null;
    $("#page").replaceChildren();
    $("#app").hidden = true;
    $("#login-view").hidden = false;
  });
  $("#host").addEventListener("change", () => render());
  window.addEventListener("hashchange", () => { status(""); render(); });

  // --- pages ---
  const pages = { overview, users, sessions, modules, rooms, s2s, allowlist, groups };
  async function render() {
    if (!auth) return;
    clearInterval(timer);
    const name = (location.hash || "#overview").slice(1);
    const page = pages[name] || overview;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + name);
    try {
      await page();
    } catch (e) {
      status(e.message, false);
    }
  }
  function show(...children) {
    $("#page").replaceChildren(...children);
  }
  function every(ms, fn) {
    clearInterval(timer);
    timer = setInterval(() => {
      // Not while a destructive button waits for its confirming click.
      if (document.querySelector('#page button[data-armed="1"]')) return;
      fn().catch((e) => status(e.message, false));
    }, ms);
  }

  // Overview: version, uptime, hosts, sessions by transport, users, live stanza rates.
  let chartState = null;
  async function overview() {
    const cards = h("div", { class: "cards", id: "overview-cards" });
    const charts = h("div", { class: "charts", id: "charts" });
    show(h("h2", {}, "Overview"), cards, h("h2", {}, "Live"), charts,
      h("p", { class: "muted", id: "metrics-note" }, "Rates from /metrics, sampled every 5 seconds."));
    const fill = async () => {
      const [info, hl, ss, us] = await Promise.all([
        api("GET", "/server", undefined, { host: false }),
        api("GET", "/hosts", undefined, { host: false }),
        api("GET", "/sessions", undefined, { host: false }),
        api("GET", "/all-users"),
      ]);
      const byTransport = {};
      for (const s of ss.sessions) {
        const k = s.transport + (s.secure ? " (TLS)" : " (plain)");
        byTransport[k] = (byTransport[k] || 0) + 1;
      }
      const card = (label, value, id) => h("div", { class: "card", id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
      cards.replaceChildren(
        card("Version", info.name + " " + info.version, "card-version"),
        card("Uptime", duration(info.uptime_secs), "card-uptime"),
        card("Hosts", hl.hosts.filter((x) => x.active).map((x) => x.host).join(", "), "card-hosts"),
        card("Sessions", String(ss.count), "card-sessions"),
        card("By transport", Object.entries(byTransport).map(([k, v]) => `${k}: ${v}`).join(", ") || "none", "card-transports"),
        card("Users on " + host(), String(us.count), "card-users"),
        card("Memory", info.memory.rss_bytes ? (info.memory.rss_bytes / 1048576).toFixed(1) + " MiB" : "n/a", "card-memory"),
      );
    };
    await fill();
    chartState = makeCharts(charts);
    await sampleMetrics();
    every(5000, async () => { await fill(); await sampleMetrics(); });
  }

  // Parses the Prometheus text format into {name: [{labels, value}]}.
  function parseMetrics(text) {
    const out = {};
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[3]) });
    }
    return out;
  }
  function makeCharts(root) {
    if (typeof uPlot === "undefined") return null;
    const mk = (title, names) => {
      const div = h("div", { class: "chart" });
      root.append(div);
      const data = [[], ...names.map(() => [])];
      const colors = ["#1f6f5c", "#b3261e", "#3558a8", "#a86a00", "#6b3fa0", "#2d8a9e"];
      const plot = new uPlot({
        title, width: 340, height: 180,
        series: [{}, ...names.map((n, i) => ({ label: n, stroke: colors[i % colors.length], width: 1.5 }))],
        axes: [{}, { size: 45 }],
      }, data, div);
      return { plot, data, names };
    };
    return {
      last: null,
      stanzas: mk("Stanzas per second", ["message in", "message out", "presence in", "presence out", "iq in", "iq out"]),
      sessions: mk("Sessions", ["sessions"]),
      auth: mk("Logins per second", ["success", "failure"]),
    };
  }
  async function sampleMetrics() {
    if (!chartState) return;
    let text;
    try {
      const r = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
      if (!r.ok) throw new Error(r.status === 403 ? "/metrics is not open to this address (http.metrics_allow)" : "/metrics: " + r.status);
      text = await r.text();
    } catch (e) {
      $("#metrics-note").textContent = e.message;
      return;
    }
    const m = parseMetrics(text);
    const now = Date.now() / 1000;
    const sum = (name, pred) => (m[name] || []).filter((s) => pred(s.labels)).reduce((a, s) => a + s.value, 0);
    const totals = {
      stanzas: chartState.stanzas.names.map((n) => {
        const [kind, dir] = n.split(" ");
        return sum("oxpecker_stanzas_total", (l) => l.kind === kind && l.direction === dir);
      }),
      auth: ["success", "failure"].map((r) => sum("oxpecker_auth_total", (l) => l.result === r)),
    };
    const last = chartState.last;
    if (last) {
      const dt = Math.max(now - last.t, 0.001);
      const push = (c, values) => {
        c.data[0].push(now);
        values.forEach((v, i) => c.data[i + 1].push(v));
        if (c.data[0].length > 120) c.data.forEach((a) => a.shift());
        c.plot.setData(c.data);
      };
      push(chartState.stanzas, totals.stanzas.map((v, i) => Math.max(0, (v - last.stanzas[i]) / dt)));
      push(chartState.auth, totals.auth.map((v, i) => Math.max(0, (v - last.auth[i]) / dt)));
      push(chartState.sessions, [sum("oxpecker_sessions", () => true)]);
    }
    chartState.last = { t: now, ...totals };
  }

  // Users: search, create, reset password, delete, role.
  async function users() {
    const r = await api("GET", "/all-users");
    const search = h("input", { id: "user-search", placeholder: "Search users", type: "search" });
    const rows = r.users.map((u) => {
      const name = u.jid.split("@")[0];
      const role = h("select", { class: "role" },
        ["operator", "admin", "member", "registered", "guest"].map((x) => h("option", { value: x, selected: x === u.role.oxpecker }, x)));
      role.addEventListener("change", () => act(() => api("PATCH", `/user/${enc(name)}/role`, { role: role.value })));
      const pw = h("input", { type: "password", class: "new-password", placeholder: "new password", autocomplete: "new-password" });
      const setPw = h("button", { type: "button", class: "secondary set-password" }, "Set password");
      setPw.addEventListener("click", () => act(() => api("PATCH", `/user/${enc(name)}/password`, { password: pw.value })));
      return h("tr", { "data-jid": u.jid },
        h("td", {}, u.jid), h("td", {}, role),
        h("td", { class: "actions" }, pw, setPw,
          confirmButton("Delete", () => act(() => api("DELETE", `/user/${enc(name)}`)))));
    });
    search.addEventListener("input", () => {
      const q = search.value.toLowerCase();
      for (const tr of rows) tr.hidden = !tr.dataset.jid.toLowerCase().includes(q);
    });
    const nu = h("input", { id: "new-user", placeholder: "username", autocomplete: "off" });
    const np = h("input", { id: "new-user-password", type: "password", placeholder: "password", autocomplete: "new-password" });
    const form = h("form", { class: "inline", id: "create-user" }, nu, np, h("button", { type: "submit", id: "create-user-button" }, "Create user"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      act(() => api("POST", `/user/${enc(nu.value.trim())}`, { password: np.value }));
    });
    show(h("h2", {}, `Users of ${host()} (${r.count})`), form, h("div", { class: "toolbar" }, search),
      table("users", ["Account", "Role", "Actions"], rows));
  }

  // Sessions: who is online, from where, over what, with which client; close one.
  async function sessions() {
    const fill = async () => {
      const r = await api("GET", "/sessions");
      const now = Date.now() / 1000;
      const rows = r.sessions.map((s) => {
        const client = s.client ? [s.client.software, s.client.device].filter(Boolean).join(" on ") || s.client.id : "-";
        return h("tr", { "data-jid": s.jid },
          h("td", {}, s.jid), h("td", {}, s.ip), h("td", {}, s.transport),
          h("td", {}, s.tls ? `${s.tls.version} ${s.tls.cipher}` : (s.secure ? "TLS" : "plain")),
          h("td", {}, s.mechanism || "-"), h("td", {}, client),
          h("td", {}, duration(now - s.since)), h("td", {}, duration(s.idle_secs)),
          h("td", {}, s.sm), h("td", { class: "actions" },
            confirmButton("Close", () => act(() => api("DELETE", `/sessions/${enc(s.jid)}`)))));
      });
      show(h("h2", {}, `Sessions on ${host()} (${r.count})`),
        table("sessions", ["JID", "From", "Transport", "TLS", "Mechanism", "Client", "Connected", "Idle", "SM", ""], rows));
    };
    await fill();
    every(3000, fill);
  }

  // Modules of the host: status, load, unload, reload.
  async function modules() {
    const r = await api("GET", "/modules");
    const details = await Promise.all(r.modules.map((m) => api("GET", `/module/${enc(m)}`).catch(() => null)));
    const rows = r.modules.map((m, i) => {
      const st = details[i] && details[i].status;
      return h("tr", { "data-module": m },
        h("td", {}, m), h("td", { class: st && st.type !== "info" ? "error" : "" }, st ? `${st.type}: ${st.message}` : "loaded"),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "secondary reload", onclick: () => act(() => api("PUT", `/module/${enc(m)}`)) }, "Reload"),
          confirmButton("Unload", () => act(() => api("DELETE", `/module/${enc(m)}`)))));
    });
    const name = h("input", { id: "load-module", placeholder: "module name", autocomplete: "off" });
    const form = h("form", { class: "inline", id: "load-module-form" }, name, h("button", { type: "submit", id: "load-module-button" }, "Load"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      act(() => api("PUT", `/module/${enc(name.value.trim())}`));
    });
    show(h("h2", {}, `Modules on ${host()} (${r.count})`), form, table("modules", ["Module", "Status", "Actions"], rows));
  }

  // Group chat rooms: list, create, destroy.
  async function rooms() {
    let r;
    try { r = await api("GET", "/muc"); } catch (e) { show(h("h2", {}, "Rooms"), h("p", { class: "muted" }, e.message)); return; }
    const rows = r.rooms.map((x) => h("tr", { "data-room": x.jid },
      h("td", {}, x.jid), h("td", {}, x.name), h("td", {}, String(x.occupants)),
      h("td", {}, x.persistent ? "yes" : "no"), h("td", {}, x.public ? "yes" : "no"),
      h("td", { class: "actions" }, confirmButton("Destroy", () => act(() => api("DELETE", `/muc/${enc(x.jid)}`))))));
    const jid = h("input", { id: "new-room", placeholder: "room@conference." + host(), autocomplete: "off" });
    const form = h("form", { class: "inline" }, jid, h("button", { type: "submit" }, "Create room"));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); act(() => api("PUT", `/muc/${enc(jid.value.trim())}`, {})); });
    show(h("h2", {}, `Rooms (${r.count})`), form, table("rooms", ["Room", "Name", "Occupants", "Persistent", "Public", ""], rows));
  }

  // Server-to-server streams: list, close.
  async function s2s() {
    const r = await api("GET", "/s2s");
    const rows = r.s2s.map((x) => h("tr", {},
      h("td", {}, x.direction), h("td", {}, x.local), h("td", {}, x.remote), h("td", {}, x.auth),
      h("td", {}, x.tls ? "yes" : "no"), h("td", {}, x.cert_valid ? "valid" : "-"),
      h("td", {}, duration(x.idle_secs)), h("td", {}, String(x.queued)),
      h("td", { class: "actions" }, confirmButton("Close", () => act(() => api("DELETE", `/s2s/${enc(x.local)}/${enc(x.remote)}`))))));
    show(h("h2", {}, `Federation streams (${r.count})`),
      table("s2s", ["Direction", "Local", "Remote", "Auth", "TLS", "Certificate", "Idle", "Queued", ""], rows));
  }

  // The admin API allowlist: list, add, remove.
  async function allowlist() {
    const r = await api("GET", "/whitelist");
    const rows = r.whitelist.map((x) => h("tr", { "data-entry": x }, h("td", {}, x),
      h("td", { class: "actions" }, confirmButton("Remove", () => act(() => api("DELETE", `/whitelist/${enc(x)}`))))));
    const entry = h("input", { id: "new-entry", placeholder: "192.0.2.0/24", autocomplete: "off" });
    const form = h("form", { class: "inline" }, entry, h("button", { type: "submit" }, "Add"));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); act(() => api("PUT", `/whitelist/${enc(entry.value.trim())}`)); });
    show(h("h2", {}, `Admin API allowlist of ${host()}`),
      h("p", { class: "hint" }, "Removing the address you are using locks this dashboard out."),
      form, table("allowlist", ["Address or range", ""], rows));
  }

  // Shared-roster groups: list with members, create, add and remove members, sync, delete.
  async function groups() {
    const r = await api("GET", "/groups");
    const field = (id, ph) => h("input", { id, placeholder: ph, autocomplete: "off" });
    const gid = field("group-id", "group id"), gname = field("group-name", "display name");
    const create = h("form", { class: "inline", id: "create-group-form" }, gid, gname,
      h("button", { type: "submit", id: "create-group-button" }, "Create group"));
    create.addEventListener("submit", (ev) => { ev.preventDefault(); act(() => api("PUT", `/groups/${enc(gid.value.trim())}`, { name: gname.value.trim() || gid.value.trim() })); });
    const rows = r.groups.map((g) => {
      const path = `/groups/${enc(g.id)}`;
      const members = g.members.map((m) => h("span", { class: "member", "data-member": m }, m,
        h("button", { type: "button", class: "secondary remove-member", title: `Remove ${m}`,
          onclick: () => act(() => api("DELETE", `${path}/members/${enc(m)}`)) }, "×")));
      const who = h("input", { class: "add-member-name", placeholder: "username", autocomplete: "off" });
      const add = h("form", { class: "inline add-member" }, who, h("button", { type: "submit", class: "secondary" }, "Add member"));
      add.addEventListener("submit", (ev) => { ev.preventDefault(); act(() => api("PUT", `${path}/members/${enc(who.value.trim())}`)); });
      return h("tr", { "data-group": g.id },
        h("td", {}, g.id), h("td", {}, g.name), h("td", { class: "members" }, members.length ? members : "-"),
        h("td", { class: "actions" }, add,
          h("button", { type: "button", class: "secondary sync", onclick: () => act(() => api("POST", `${path}/sync`)) }, "Sync"),
          confirmButton("Delete", () => act(() => api("DELETE", path)))));
    });
    show(h("h2", {}, `Shared-roster groups of ${host()} (${r.count})`), create,
      table("groups", ["Group", "Name", "Members", "Actions"], rows));
  }
})();

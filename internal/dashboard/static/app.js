// Relay dashboard: live figures from /dashboard/events (server-sent
// events) and a console over the dashboard's same-origin endpoints.
// Everything a user or a publisher controls is written with textContent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const csrf = document.body.dataset.csrf || "X-Relay-Dashboard";
  const loginMode = document.body.dataset.login === "true";
  const nf = new Intl.NumberFormat();
  const rf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const SERIES_MAX = 300;
  let series = [];

  function setText(id, v) {
    const el = $(id);
    if (el && el.textContent !== String(v)) el.textContent = String(v);
  }

  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + (s % 60) + "s";
    return s + "s";
  }

  function setLive(cls, text) {
    const el = $("live");
    el.className = "pill " + cls;
    el.textContent = text;
  }

  // ---- live figures ----
  function render(s) {
    setText("m-connections", nf.format(s.connections));
    setText("m-registrations", nf.format(s.registrations));
    setText("m-topics", nf.format(s.topics));
    setText("m-publish-rate", rf.format(s.publish_rate));
    setText("m-delivery-rate", rf.format(s.delivery_rate));
    setText("m-publishes", nf.format(s.publishes));
    setText("m-deliveries", nf.format(s.deliveries));
    setText("m-slow", nf.format(s.slow_consumer_closes));
    setText("m-rejected", nf.format(s.rejected));
    setText("m-limited", nf.format(s.rate_limited));
    const by = Object.keys(s.rejected_by_status || {}).sort()
      .map((k) => k + ": " + nf.format(s.rejected_by_status[k]));
    setText("m-rejected-by", by.length ? by.join(" · ") : "none");

    const tbody = $("top").tBodies[0];
    const rows = (s.top_topics || []).map((t) => {
      const tr = document.createElement("tr");
      for (const [v, num] of [[t.topic, false], [nf.format(t.subscribers), true], [nf.format(t.users), true]]) {
        const td = document.createElement("td");
        td.textContent = v;
        if (num) td.className = "num";
        tr.appendChild(td);
      }
      return tr;
    });
    tbody.replaceChildren(...rows);
    $("top-empty").hidden = rows.length > 0;

    // Nodes: every node's summary when the engine shares them, else
    // this node alone.
    const nodes = s.nodes && s.nodes.length ? s.nodes : [s];
    const nodeRows = nodes.map((n) => {
      const self = n.node === s.node;
      const cells = [
        [(n.node || "(unnamed)") + (self && nodes.length > 1 ? " (this node)" : ""), false],
        [s.engine + (s.networked ? " (shared)" : ""), false],
        [n.ready ? "ready" : "not ready" + (self && s.ready_error ? ": " + s.ready_error : ""), false],
        [duration(n.uptime_seconds), true],
        [nf.format(n.connections), true],
        [rf.format(n.publish_rate) + " · " + rf.format(n.delivery_rate), true],
        [self && s.listener_open != null ? nf.format(s.listener_open) : "–", true],
      ];
      const tr = document.createElement("tr");
      for (const [v, num] of cells) {
        const td = document.createElement("td");
        td.textContent = v;
        if (num) td.className = "num";
        tr.appendChild(td);
      }
      return tr;
    });
    $("nodes").tBodies[0].replaceChildren(...nodeRows);
    setText("scope-note", s.nodes && s.nodes.length
      ? nodes.length + " nodes · figures above: this node (" + (s.node || "unnamed") + ")"
      : s.networked
        ? "per-node view: this node (" + (s.node || "unnamed") + "); each node's dashboard shows its own figures"
        : "a single node");
    if (s.ready) setLive("pill-ok", "live"); else setLive("pill-bad", "engine not ready");
  }

  function drawChart() {
    const W = 600, H = 200, pad = 6;
    let max = 1;
    for (const p of series) max = Math.max(max, p[1], p[2]);
    max = niceCeil(max);
    setText("chart-max", rf.format(max));
    // The window is the last five minutes, or less while the node is
    // younger, but at least half a minute.
    const now = series.length ? series[series.length - 1][0] : Date.now();
    const oldest = series.length ? series[0][0] : now;
    const span = Math.min(SERIES_MAX * 1000, Math.max(30000, now - oldest));
    const from = now - span;
    setText("chart-from", span >= 120000 ? Math.round(span / 60000) + " min ago" : Math.round(span / 1000) + " s ago");
    const pts = (i) => series.map((p) => {
      const x = Math.max(0, ((p[0] - from) / span) * W);
      const y = H - pad - (p[i] / max) * (H - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    $("line-a").setAttribute("points", pts(1));
    $("line-b").setAttribute("points", pts(2));
  }

  function niceCeil(v) {
    const e = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * e) return m * e;
    return 10 * e;
  }

  let source = null;
  function connect() {
    source = new EventSource("/dashboard/events");
    let first = true;
    source.addEventListener("snapshot", (ev) => {
      let s;
      try { s = JSON.parse(ev.data); } catch (e) { return; }
      if (first) { series = s.series || []; first = false; }
      else {
        // A stream's first event may already hold the next event's point.
        const last = series.length ? series[series.length - 1][0] : 0;
        for (const p of s.series || []) if (p[0] > last) series.push(p);
      }
      if (series.length > SERIES_MAX) series = series.slice(series.length - SERIES_MAX);
      render(s);
      drawChart();
    });
    source.onerror = () => {
      setLive("pill-wait", "reconnecting");
      if (loginMode) {
        // A stream refused for an expired session does not come back:
        // show the login again.
        fetch("/dashboard/api/snapshot", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) location.reload();
        }).catch(() => {});
      }
    };
  }

  // ---- console ----
  async function call(method, path, body) {
    const headers = {};
    headers[csrf] = "1";
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401 && loginMode) { location.reload(); }
    if (!r.ok) throw new Error((data && data.error) || ("HTTP " + r.status));
    return data;
  }

  function result(id, ok, text) {
    const el = $(id);
    el.className = "result " + (ok ? "ok" : "bad");
    el.textContent = text;
  }

  function topicOf(id) { return $(id).value.trim(); }
  function uint(id) {
    const v = $(id).value.trim();
    return v === "" ? null : v;
  }

  function tabs() {
    const buttons = document.querySelectorAll(".tab");
    for (const b of buttons) {
      b.addEventListener("click", () => {
        for (const o of buttons) o.setAttribute("aria-selected", String(o === b));
        for (const p of document.querySelectorAll(".pane")) p.hidden = p.dataset.pane !== b.dataset.tab;
        // Carry the topic over, the usual next step.
        const from = document.querySelector(".pane:not([hidden]) input[name=topic]");
        const last = sessionStorage.getItem("topic");
        if (from && !from.value && last) from.value = last;
      });
    }
  }

  function remember(topic) { try { sessionStorage.setItem("topic", topic); } catch (e) { /* private mode */ } }

  function publishForm() {
    $("pane-publish").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const topic = topicOf("pub-topic");
      const body = { topic, message: $("pub-message").value };
      const user = uint("pub-user");
      if (user !== null) {
        if (!/^[0-9]+$/.test(user)) { result("pub-result", false, "the user id is a number"); return; }
        body.user_id = Number(user);
      }
      remember(topic);
      $("pub-send").disabled = true;
      try {
        const rc = await call("POST", "/dashboard/api/publish", body);
        let text = "published";
        if (rc.offset) text += " at offset " + rc.offset;
        text += " · delivered to " + rc.delivered + " connection" + (rc.delivered === 1 ? "" : "s") + " on this node";
        if (rc.duplicate) text += " (duplicate)";
        result("pub-result", true, text);
      } catch (e) {
        result("pub-result", false, e.message);
      } finally {
        $("pub-send").disabled = false;
      }
    });
  }

  let watch = null;
  function logLine(kind, text, sys) {
    const li = document.createElement("li");
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = new Date().toLocaleTimeString();
    const k = document.createElement("span");
    k.className = "k" + (sys ? " sys" : "");
    k.textContent = kind;
    const m = document.createElement("span");
    m.className = "m";
    m.textContent = text;
    li.append(t, k, m);
    const log = $("watch-log");
    log.prepend(li);
    while (log.children.length > 200) log.lastChild.remove();
  }

  function stopWatch(why) {
    if (watch) {
      const w = watch;
      watch = null;
      w.onclose = null;
      try { w.close(1000); } catch (e) { /* already closed */ }
    }
    $("watch-start").disabled = false;
    $("watch-stop").disabled = true;
    result("watch-status", true, why || "not watching");
    $("watch-status").className = "result";
  }

  function watchForm() {
    $("pane-watch").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const topic = topicOf("watch-topic");
      stopWatch();
      remember(topic);
      $("watch-start").disabled = true;
      let info;
      try {
        info = await call("POST", "/dashboard/api/watch");
      } catch (e) {
        $("watch-start").disabled = false;
        result("watch-status", false, e.message);
        return;
      }
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + info.path;
      const ws = new WebSocket(url, info.protocol);
      watch = ws;
      $("watch-stop").disabled = false;
      result("watch-status", true, "connecting…");
      ws.onopen = () => {
        ws.send(JSON.stringify({ type: "subscribe", id: 1, topics: [topic], presence: true }));
      };
      ws.onmessage = (e) => {
        let f;
        try { f = JSON.parse(e.data); } catch (err) { return; }
        switch (f.type) {
          case "subscribed":
            result("watch-status", true, "watching " + f.topic + " from offset " + f.offset);
            $("watch-status").dataset.watching = f.topic;
            logLine("subscribed", f.topic + " · offset " + f.offset + " · epoch " + f.epoch, true);
            break;
          case "message":
            logLine(f.offset ? "#" + f.offset : "message", f.message);
            break;
          case "join": case "leave":
            logLine(f.type, "user " + f.user_id, true);
            break;
          case "error":
            logLine("error", f.message || f.code, true);
            break;
          default:
            logLine(f.type || "frame", e.data, true);
        }
      };
      ws.onclose = (e) => {
        if (watch !== ws) return;
        watch = null;
        $("watch-start").disabled = false;
        $("watch-stop").disabled = true;
        result("watch-status", false, "closed (" + e.code + (e.reason ? ": " + e.reason : "") + ")");
      };
    });
    $("watch-stop").addEventListener("click", () => stopWatch("stopped"));
  }

  function historyForm() {
    $("pane-history").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const topic = topicOf("hist-topic");
      remember(topic);
      const q = new URLSearchParams();
      const since = uint("hist-since"), limit = uint("hist-limit");
      if (since !== null) q.set("since", since);
      if (limit !== null) q.set("limit", limit);
      const qs = q.toString();
      try {
        const h = await call("GET", "/dashboard/api/history/" + encodeURIComponent(topic) + (qs ? "?" + qs : ""));
        const rows = h.messages.map((m) => {
          const tr = document.createElement("tr");
          const a = document.createElement("td");
          a.className = "num";
          a.textContent = nf.format(m.offset);
          const b = document.createElement("td");
          b.className = "mono";
          b.textContent = m.message;
          tr.append(a, b);
          return tr;
        });
        $("hist-table").tBodies[0].replaceChildren(...rows);
        result("hist-status", true, rows.length + " message" + (rows.length === 1 ? "" : "s") +
          " · latest offset " + h.offset + (h.complete ? "" : " · older messages are gone"));
      } catch (e) {
        result("hist-status", false, e.message);
      }
    });
  }

  function presenceForm() {
    $("pane-presence").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const topic = topicOf("pres-topic");
      remember(topic);
      try {
        const p = await call("GET", "/dashboard/api/presence/" + encodeURIComponent(topic));
        const rows = p.users.map((u) => {
          const tr = document.createElement("tr");
          const a = document.createElement("td");
          a.textContent = String(u.user_id);
          const b = document.createElement("td");
          b.className = "num";
          b.textContent = nf.format(u.connections);
          tr.append(a, b);
          return tr;
        });
        $("pres-table").tBodies[0].replaceChildren(...rows);
        result("pres-status", true, p.users.length + " user" + (p.users.length === 1 ? "" : "s") + " · " + p.connections + " connection" + (p.connections === 1 ? "" : "s"));
      } catch (e) {
        result("pres-status", false, e.message);
      }
    });
  }

  function logout() {
    const b = $("logout");
    if (!b) return;
    b.addEventListener("click", async () => {
      try { await call("POST", "/dashboard/logout"); } catch (e) { /* reload anyway */ }
      location.reload();
    });
  }

  tabs();
  publishForm();
  watchForm();
  historyForm();
  presenceForm();
  logout();
  connect();
})();

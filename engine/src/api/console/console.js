// Swapline console: plain ES2020, no framework, no build step. Served by
// the engine at /console/console.js under a CSP that allows only this
// origin (and ws:/wss: for sockets).
//
// Rules this file keeps:
// - Every value from the API is written with textContent (never HTML).
// - The API key lives in sessionStorage (this tab only) and goes out as
//   `Authorization: Bearer`; WebSockets open with single-use tickets.
// - Live updates come from GET /api/stream when the engine has it, else
//   from one WebSocket per unfinished order; the list is also polled, so a
//   missed message costs at most one poll period.
"use strict";

(() => {
  const KEY_STORAGE = "swapline.apiKey";
  /** Poll period of the order list (ms): with a stream, and without. */
  const POLL_WITH_STREAM_MS = 10000;
  const POLL_WITHOUT_STREAM_MS = 2000;
  /** Poll period of the overview (health, stuck orders, failures), ms. */
  const STATS_MS = 5000;
  /** Most per-order sockets open at once in the fallback mode. */
  const MAX_ORDER_SOCKETS = 20;
  /** Statuses an order can still be cancelled in (not yet submitted). */
  const CANCELLABLE = new Set(["pending", "routing", "building"]);
  const RETRYABLE = new Set(["failed", "cancelled"]);
  const TERMINAL = new Set(["confirmed", "failed", "cancelled"]);

  const $ = (id) => document.getElementById(id);

  const state = {
    key: null,
    signedIn: false,
    orders: [],
    byId: new Map(),
    rows: new Map(),
    selected: null,
    filters: { status: "", code: "" },
    stream: null,
    streamMode: "off", // "stream" | "sockets" | "off"
    streamFailures: 0,
    cursor: null,
    sockets: new Map(),
    socketFailures: new Map(),
    listSeq: 0,
    timers: [],
    refreshPending: null,
    generation: 0,
  };

  // ---- small helpers -----------------------------------------------------

  /** An element with text (never HTML) and attributes. */
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function announce(text) {
    const region = $("announce");
    // A changed text is what screen readers read out.
    region.textContent = "";
    window.setTimeout(() => { region.textContent = text; }, 30);
  }

  function showAlert(text) {
    const alert = $("alert");
    alert.textContent = text;
    alert.hidden = !text;
  }

  function short(id) {
    return String(id || "").slice(0, 8);
  }

  function when(timestamp) {
    if (!timestamp) return "–";
    const date = new Date(timestamp);
    return Number.isNaN(date.getTime()) ? String(timestamp) : date.toLocaleString();
  }

  function dash(value) {
    return value === undefined || value === null || value === "" ? "–" : String(value);
  }

  function errorText(response) {
    const error = response.data && response.data.error;
    if (error && error.code) return `${error.code}: ${error.message || ""}`.trim();
    return `HTTP ${response.status}`;
  }

  function wsBase() {
    return `${window.location.protocol === "https:" ? "wss:" : "ws:"}//${window.location.host}`;
  }

  /** One API call with the operator's key; never throws for HTTP errors. */
  async function api(method, path, body) {
    // No key (an engine with auth.required = false): no header at all, as
    // a key that is sent is always checked.
    const headers = state.key ? { Authorization: `Bearer ${state.key}` } : {};
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method === "POST" && path === "/api/orders/execute") {
      // A retried click never makes a second order.
      headers["Idempotency-Key"] = newKey();
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      return { status: 0, ok: false, data: { error: { code: "network", message: String(error) } } };
    }
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try { data = await response.json(); } catch (_) { data = null; }
    }
    if (response.status === 401 && state.signedIn) {
      signOut("The engine refused the key (401); sign in again.");
    }
    return { status: response.status, ok: response.ok, data };
  }

  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function every(ms, task) {
    const generation = state.generation;
    const run = () => {
      if (generation !== state.generation) return;
      Promise.resolve(task()).catch((error) => console.warn(error));
    };
    run();
    state.timers.push(window.setInterval(run, ms));
  }

  // ---- sign in and out ---------------------------------------------------

  async function signIn(key, quiet) {
    state.key = key;
    const probe = await api("GET", "/api/orders?limit=1");
    if (!probe.ok) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORAGE);
      if (!quiet) {
        const why = probe.status === 401 ? (key ? "the key was refused" : "this engine requires a key") :
          probe.status === 403 ? "the key lacks the read scope" : errorText(probe);
        showAlert(`Could not sign in: ${why}.`);
        $("api-key").focus();
      }
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    state.signedIn = true;
    showAlert("");
    $("api-key").value = "";
    $("login").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    $("who").hidden = false;
    $("who").textContent = key ? "Signed in; the key is kept for this tab only." : "Signed in without a key.";
    announce("Signed in.");
    start();
  }

  function signOut(reason) {
    state.generation += 1;
    for (const timer of state.timers) window.clearInterval(timer);
    state.timers = [];
    closeLive();
    state.key = null;
    state.signedIn = false;
    state.socketFailures.clear();
    state.orders = [];
    state.byId.clear();
    state.rows.clear();
    state.selected = null;
    state.cursor = null;
    sessionStorage.removeItem(KEY_STORAGE);
    clear($("orders-body"));
    $("timeline").hidden = true;
    $("app").hidden = true;
    $("login").hidden = false;
    $("sign-out").hidden = true;
    $("who").hidden = true;
    showAlert(reason || "");
    announce("Signed out.");
    $("api-key").focus();
  }

  function start() {
    const generation = state.generation;
    every(STATS_MS, refreshStats);
    // The poll period follows the live mode; a cheap check each second.
    let last = 0;
    every(1000, () => {
      const period = state.streamMode === "stream" ? POLL_WITH_STREAM_MS : POLL_WITHOUT_STREAM_MS;
      if (Date.now() - last < period) return undefined;
      last = Date.now();
      return refreshOrders();
    });
    openLive(generation);
  }

  // ---- live updates ------------------------------------------------------

  function setLive(mode) {
    state.streamMode = mode;
    const text = mode === "stream" ? "one stream (/api/stream)" :
      mode === "sockets" ? `per-order sockets (${state.sockets.size} open)` : "polling";
    $("stat-live").textContent = text;
  }

  function closeLive() {
    if (state.stream) {
      state.stream.onclose = null;
      state.stream.close(1000);
      state.stream = null;
    }
    for (const socket of state.sockets.values()) {
      socket.onclose = null;
      socket.close(1000);
    }
    state.sockets.clear();
    setLive("off");
  }

  /** Opens GET /api/stream with a ticket; falls back to per-order sockets
   *  when the engine has no stream (its ticket endpoint wants an orderId). */
  async function openLive(generation) {
    if (generation !== state.generation) return;
    const ticket = await api("POST", "/api/ws-tickets", {});
    if (generation !== state.generation) return;
    if (!ticket.ok || !ticket.data || !ticket.data.ticket) {
      setLive("sockets");
      watchUnfinished();
      return;
    }
    let url = ticket.data.wsUrl && String(ticket.data.wsUrl).includes("/api/stream") ?
      String(ticket.data.wsUrl) : `${wsBase()}/api/stream?ticket=${encodeURIComponent(ticket.data.ticket)}`;
    if (state.cursor !== null) {
      url += `${url.includes("?") ? "&" : "?"}cursor=${encodeURIComponent(state.cursor)}`;
    }
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (_) {
      setLive("sockets");
      watchUnfinished();
      return;
    }
    state.stream = socket;
    socket.onopen = () => {
      state.streamFailures = 0;
      setLive("stream");
    };
    socket.onmessage = (message) => {
      let value;
      try { value = JSON.parse(message.data); } catch (_) { return; }
      if (value && value.cursor !== undefined && value.cursor !== null) state.cursor = value.cursor;
      if (value && value.orderId) scheduleRefresh(value.orderId);
    };
    socket.onclose = () => {
      state.stream = null;
      if (generation !== state.generation) return;
      state.streamFailures += 1;
      if (state.streamFailures >= 3) {
        // The stream keeps failing: per-order sockets until the next sign-in.
        setLive("sockets");
        watchUnfinished();
        return;
      }
      setLive("off");
      window.setTimeout(() => openLive(generation), 1000 * state.streamFailures);
    };
  }

  /** Fallback: one ticketed socket per unfinished order in the table. */
  async function watchUnfinished() {
    if (state.streamMode !== "sockets") return;
    const generation = state.generation;
    for (const order of state.orders) {
      if (state.sockets.size >= MAX_ORDER_SOCKETS) break;
      if (TERMINAL.has(order.status) || state.sockets.has(order.id)) continue;
      // An order whose socket keeps failing is left to the list poll.
      if ((state.socketFailures.get(order.id) || 0) >= 3) continue;
      state.sockets.set(order.id, null);
      const ticket = await api("POST", "/api/ws-tickets", { orderId: order.id });
      if (generation !== state.generation) return;
      if (!ticket.ok || !ticket.data || !ticket.data.wsUrl) {
        state.sockets.delete(order.id);
        state.socketFailures.set(order.id, (state.socketFailures.get(order.id) || 0) + 1);
        continue;
      }
      const socket = new WebSocket(ticket.data.wsUrl);
      state.sockets.set(order.id, socket);
      socket.onmessage = (message) => {
        let value;
        try { value = JSON.parse(message.data); } catch (_) { return; }
        if (value && value.seq !== undefined) scheduleRefresh(order.id);
      };
      socket.onclose = (closed) => {
        state.sockets.delete(order.id);
        // 1000: the order finished; anything else counts against it.
        if (closed.code !== 1000) {
          state.socketFailures.set(order.id, (state.socketFailures.get(order.id) || 0) + 1);
        }
        if (state.streamMode === "sockets") setLive("sockets");
        scheduleRefresh(order.id);
      };
      setLive("sockets");
    }
  }

  /** Coalesces bursts of events into one refresh. */
  function scheduleRefresh(orderId) {
    if (state.refreshPending) {
      state.refreshPending.ids.add(orderId);
      return;
    }
    state.refreshPending = { ids: new Set([orderId]) };
    window.setTimeout(async () => {
      const pending = state.refreshPending;
      state.refreshPending = null;
      await refreshOrders();
      if (state.selected && pending && pending.ids.has(state.selected)) await loadTimeline(state.selected, false);
    }, 150);
  }

  // ---- the order list ----------------------------------------------------

  /** GET /api/orders with the filters; a page as large as the engine allows. */
  async function listOrders(status, code) {
    const query = (limit) => {
      const params = new URLSearchParams();
      if (status) params.set("status", status);
      if (code) params.set("code", code);
      if (limit) params.set("limit", String(limit));
      return `/api/orders?${params.toString()}`;
    };
    let response = await api("GET", query(200));
    if (response.status === 400 && response.data && response.data.error &&
        response.data.error.code === "invalid_limit") {
      response = await api("GET", query(0));
    }
    return response;
  }

  async function refreshOrders() {
    if (!state.signedIn) return;
    const { status, code } = state.filters;
    state.listSeq += 1;
    const seq = state.listSeq;
    const response = await listOrders(status, code);
    // A slower, older answer never overwrites a newer one.
    if (seq !== state.listSeq || !state.signedIn) return;
    if (!response.ok) {
      if (response.status !== 401) showAlert(`Could not list orders: ${errorText(response)}`);
      return;
    }
    let orders = Array.isArray(response.data.orders) ? response.data.orders : [];
    // Applied here too, so the filter holds whatever the engine's version.
    if (code) orders = orders.filter((o) => o.lastError && o.lastError.code === code);
    const before = state.byId;
    state.orders = orders;
    state.byId = new Map(orders.map((o) => [o.id, o]));
    renderOrders();
    if (state.streamMode === "sockets") watchUnfinished();
    if (state.selected) {
      const old = before.get(state.selected);
      const now = state.byId.get(state.selected);
      if (now && (!old || old.lastSeq !== now.lastSeq || old.status !== now.status)) {
        await loadTimeline(state.selected, false);
      }
    }
  }

  function renderOrders() {
    const body = $("orders-body");
    const seen = new Set();
    let previous = null;
    for (const order of state.orders) {
      seen.add(order.id);
      let row = state.rows.get(order.id);
      if (!row) {
        row = buildRow(order.id);
        state.rows.set(order.id, row);
      }
      updateRow(row, order);
      // Moved only when out of place, so a focused button keeps its focus.
      const wanted = previous ? previous.nextSibling : body.firstChild;
      if (wanted !== row) body.insertBefore(row, wanted);
      previous = row;
    }
    for (const [id, row] of state.rows) {
      if (!seen.has(id)) {
        row.remove();
        state.rows.delete(id);
      }
    }
    $("orders-empty").hidden = state.orders.length > 0;
    const filters = [];
    if (state.filters.status) filters.push(`status ${state.filters.status}`);
    if (state.filters.code) filters.push(`failure code ${state.filters.code}`);
    $("orders-caption").textContent =
      `${state.orders.length} orders, newest first${filters.length ? `; ${filters.join(", ")}` : ""}`;
  }

  function buildRow(id) {
    const row = el("tr", { "data-order-id": id });
    const open = el("button", { type: "button", className: "open", "aria-label": `Open the timeline of order ${id}`, title: id });
    open.appendChild(el("span", { className: "id" }, short(id)));
    open.addEventListener("click", () => openTimeline(id));
    const idCell = el("td");
    idCell.appendChild(open);
    row.appendChild(idCell);
    for (const name of ["created", "pair", "amount", "status", "dex", "attempts", "code"]) {
      row.appendChild(el("td", { className: name === "attempts" || name === "amount" ? `${name} num` : name }));
    }
    const actions = el("td", { className: "actions" });
    const cancel = el("button", { type: "button", className: "cancel danger", "aria-label": `Cancel order ${id}` }, "Cancel");
    cancel.addEventListener("click", () => cancelOrder(id, cancel));
    const retry = el("button", { type: "button", className: "retry", "aria-label": `Retry order ${id}` }, "Retry");
    retry.addEventListener("click", () => retryOrder(id, retry));
    const note = el("span", { className: "note" });
    actions.append(cancel, retry, note);
    row.appendChild(actions);
    return row;
  }

  function cell(row, name) {
    return row.querySelector(`td.${name}`);
  }

  function updateRow(row, order) {
    cell(row, "created").textContent = when(order.createdAt);
    cell(row, "pair").textContent = `${order.tokenIn} → ${order.tokenOut}`;
    cell(row, "amount").textContent = dash(order.amount);
    const status = cell(row, "status");
    status.textContent = order.status;
    status.className = `status status-${order.status}`;
    cell(row, "dex").textContent = dash(order.dex);
    cell(row, "attempts").textContent = dash(order.attempts);
    cell(row, "code").textContent = order.lastError ? order.lastError.code : "–";
    row.querySelector("button.cancel").hidden = !CANCELLABLE.has(order.status);
    const retriedBy = order.retriedBy || null;
    row.querySelector("button.retry").hidden = !RETRYABLE.has(order.status) || Boolean(retriedBy);
    const note = row.querySelector(".note");
    note.textContent = retriedBy ? `retried by ${short(retriedBy)}` :
      order.retryOf ? `retry of ${short(order.retryOf)}` : "";
    row.classList.toggle("selected", state.selected === order.id);
  }

  // ---- actions -----------------------------------------------------------

  async function submitOrder(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const amount = form.elements.amount.value.trim();
    const slippage = form.elements.slippage.value.trim();
    const body = {
      tokenIn: form.elements.tokenIn.value.trim(),
      tokenOut: form.elements.tokenOut.value.trim(),
      // Sent as JSON numbers, as the API wants; the engine reads their text.
      amount: Number(amount),
      slippage: Number(slippage),
    };
    if (!Number.isFinite(body.amount) || !Number.isFinite(body.slippage)) {
      showAlert("Amount and slippage must be numbers.");
      return;
    }
    const button = $("submit-order");
    button.disabled = true;
    const response = await api("POST", "/api/orders/execute", body);
    button.disabled = false;
    if (!response.ok) {
      showAlert(`The order was refused: ${errorText(response)}`);
      return;
    }
    showAlert("");
    const id = response.data.orderId;
    $("created-id").textContent = id;
    announce(`Order ${id} created.`);
    scheduleRefresh(id);
  }

  function unavailable(response, what) {
    return response.status === 404 && response.data && response.data.error &&
      response.data.error.code === "not_found" ? `this engine has no ${what} endpoint` : errorText(response);
  }

  async function cancelOrder(id, button) {
    button.disabled = true;
    const response = await api("POST", `/api/orders/${encodeURIComponent(id)}/cancel`, {});
    button.disabled = false;
    if (!response.ok) {
      showAlert(`Could not cancel order ${id}: ${unavailable(response, "cancel")}`);
      return;
    }
    showAlert("");
    announce(`Order ${id} cancelled.`);
    scheduleRefresh(id);
  }

  async function retryOrder(id, button) {
    button.disabled = true;
    const response = await api("POST", `/api/orders/${encodeURIComponent(id)}/retry`, {});
    button.disabled = false;
    if (!response.ok) {
      showAlert(`Could not retry order ${id}: ${unavailable(response, "retry")}`);
      return;
    }
    showAlert("");
    const data = response.data || {};
    const created = data.orderId || data.id || (data.order && data.order.id) || "";
    announce(created ? `Order ${id} retried as ${created}.` : `Order ${id} retried.`);
    if (created) $("created-id").textContent = created;
    scheduleRefresh(id);
  }

  // ---- overview ----------------------------------------------------------

  async function refreshStats() {
    if (!state.signedIn) return;
    const [health, metrics, failed] = await Promise.all([
      fetch("/health", { cache: "no-store", credentials: "omit" })
        .then((r) => r.json()).catch(() => null),
      fetch("/metrics", { cache: "no-store", credentials: "omit" })
        .then((r) => (r.ok ? r.text() : null)).catch(() => null),
      listOrders("failed", ""),
    ]);
    if (health) {
      $("stat-health").textContent = dash(health.status);
      const queue = health.queue || {};
      const up = queue.status === "ok";
      $("stat-waiting").textContent = up ? dash(queue.waiting) : "down";
      $("stat-active").textContent = up ? dash(queue.active) : "down";
      $("stat-delayed").textContent = up ? dash(queue.delayed) : "down";
    } else {
      $("stat-health").textContent = "unreachable";
    }
    $("stat-stuck").textContent = stuckText(metrics);
    renderFailures(failed);
  }

  /** `swapline_orders_stuck` (and the oldest one's age) from /metrics. */
  function stuckText(metrics) {
    if (metrics === null) return "unknown (metrics off)";
    const value = (name) => {
      for (const line of metrics.split("\n")) {
        if (line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
      }
      return null;
    };
    const stuck = value("swapline_orders_stuck");
    if (stuck === null || Number.isNaN(stuck)) return "unknown";
    const oldest = value("swapline_orders_stuck_oldest_seconds");
    return stuck > 0 && oldest ? `${stuck} (oldest ${Math.round(oldest)} s)` : String(stuck);
  }

  function renderFailures(response) {
    const list = $("failures");
    clear(list);
    if (!response || !response.ok) {
      $("failures-empty").hidden = false;
      $("failures-empty").textContent = "Unknown.";
      return;
    }
    const counts = new Map();
    for (const order of response.data.orders || []) {
      const code = order.lastError ? order.lastError.code : "unknown";
      counts.set(code, (counts.get(code) || 0) + 1);
    }
    $("failures-empty").hidden = counts.size > 0;
    $("failures-empty").textContent = "None among the newest failed orders.";
    for (const [code, count] of [...counts].sort((a, b) => b[1] - a[1])) {
      const item = el("li");
      const button = el("button", { type: "button", className: "secondary",
        "aria-label": `Show failed orders with code ${code}` }, `${code}: ${count}`);
      button.addEventListener("click", () => {
        $("filter-status").value = "failed";
        $("filter-code").value = code;
        applyFilters();
      });
      item.appendChild(button);
      list.appendChild(item);
    }
  }

  // ---- filters -----------------------------------------------------------

  function applyFilters(event) {
    if (event) event.preventDefault();
    state.filters = { status: $("filter-status").value, code: $("filter-code").value.trim() };
    refreshOrders().then(() => announce(`${state.orders.length} orders shown.`));
  }

  function clearFilters() {
    $("filter-status").value = "";
    $("filter-code").value = "";
    applyFilters();
  }

  // ---- timeline ----------------------------------------------------------

  async function openTimeline(id) {
    state.selected = id;
    for (const [rowId, row] of state.rows) row.classList.toggle("selected", rowId === id);
    $("timeline").hidden = false;
    await loadTimeline(id, true);
    $("timeline-heading").focus();
  }

  async function loadTimeline(id, announceIt) {
    const path = encodeURIComponent(id);
    const [order, events] = await Promise.all([
      api("GET", `/api/orders/status/${path}`),
      api("GET", `/api/orders/${path}/events`),
    ]);
    if (state.selected !== id) return;
    if (!order.ok || !events.ok) {
      showAlert(`Could not load order ${id}: ${errorText(order.ok ? events : order)}`);
      return;
    }
    renderTimeline(order.data, events.data.events || []);
    if (announceIt) announce(`Timeline of order ${id}: ${order.data.status}, ${(events.data.events || []).length} events.`);
  }

  function renderTimeline(order, events) {
    $("timeline-id").textContent = order.id;
    const summary = $("timeline-summary");
    clear(summary);
    const add = (term, value, onOpen) => {
      summary.appendChild(el("dt", {}, term));
      const dd = el("dd", { "data-field": term.toLowerCase().replace(/[^a-z]+/g, "-") });
      if (onOpen && value) {
        const button = el("button", { type: "button", className: "secondary", "aria-label": `Open the timeline of order ${value}` }, value);
        button.addEventListener("click", () => openTimeline(value));
        dd.appendChild(button);
      } else {
        dd.textContent = dash(value);
      }
      summary.appendChild(dd);
    };
    add("Status", order.status);
    add("Pair", `${order.tokenIn} → ${order.tokenOut}`);
    add("Amount", order.amount);
    add("Slippage", order.slippage === undefined ? null : `${order.slippage} %`);
    add("Strategy", order.strategy ? `${order.strategy.name} (sha256 ${String(order.strategy.sha256).slice(0, 12)}…)` : null);
    add("Venue", order.dex);
    add("Amount out", order.amountOut);
    add("Executed price", order.executedPrice);
    add("Transaction", order.txHash);
    add("Attempts", order.attempts);
    add("Last error", order.lastError ? `${order.lastError.code}: ${order.lastError.message}` : null);
    if (order.expiresAt) add("Expires", when(order.expiresAt));
    if (order.retryOf) add("Retry of", order.retryOf, true);
    if (order.retriedBy) add("Retried by", order.retriedBy, true);
    add("Created", when(order.createdAt));
    add("Updated", when(order.updatedAt));

    const legs = order.route && Array.isArray(order.route.legs) ? order.route.legs : [];
    const routeTable = $("timeline-route");
    const routeBody = routeTable.querySelector("tbody");
    clear(routeBody);
    for (const leg of legs) {
      const row = el("tr");
      for (const value of [leg.dex, leg.amountIn, leg.expectedOut, leg.minAmountOut, leg.filledOut, leg.signature]) {
        row.appendChild(el("td", {}, dash(value)));
      }
      routeBody.appendChild(row);
    }
    routeTable.hidden = legs.length === 0;
    $("timeline-route-empty").hidden = legs.length > 0;
    $("timeline-route-empty").textContent = "No route yet.";
    if (order.route && order.route.reason) {
      routeTable.querySelector("caption").textContent =
        `Legs, executed in order (route v${order.route.version}: ${order.route.reason})`;
    }

    const quotes = Array.isArray(order.quotes) ? order.quotes : [];
    const quoteTable = $("timeline-quotes");
    const quoteBody = quoteTable.querySelector("tbody");
    clear(quoteBody);
    for (const quote of quotes) {
      const row = el("tr");
      for (const value of [quote.dex, quote.amountOut, quote.price, quote.feeBps, quote.priceImpactBps, quote.latencyMs]) {
        row.appendChild(el("td", {}, dash(value)));
      }
      quoteBody.appendChild(row);
    }
    quoteTable.hidden = quotes.length === 0;
    $("timeline-quotes-empty").hidden = quotes.length > 0;

    const list = $("timeline-events");
    clear(list);
    for (const event of events) {
      const item = el("li", { "data-seq": event.seq, "data-type": event.type });
      item.appendChild(el("span", { className: "type" }, `${event.type}`));
      item.appendChild(el("span", { className: "when" }, `#${event.seq} · ${when(event.timestamp)} · ${event.progress}%`));
      item.appendChild(el("span", { className: "detail" }, event.message));
      const detail = eventDetail(event);
      if (detail) item.appendChild(el("span", { className: "detail" }, detail));
      list.appendChild(item);
    }
  }

  /** The fields of an event's type, in words. */
  function eventDetail(event) {
    switch (event.type) {
      case "routing":
        return Array.isArray(event.quotes) ?
          `quotes: ${event.quotes.map((q) => `${q.dex} ${q.amountOut} @ ${q.price}`).join("; ")}` : "";
      case "building": {
        const parts = [];
        if (event.strategy) parts.push(`strategy ${event.strategy}`);
        if (event.chosenDex) parts.push(`venue ${event.chosenDex}`);
        if (event.route && Array.isArray(event.route.legs)) {
          parts.push(`route: ${event.route.legs.map((l) => `${l.dex} ${l.amountIn}`).join(" + ")}`);
        }
        return parts.join("; ");
      }
      case "submitted":
        return `attempt ${event.attempt} of ${event.maxAttempts}; signatures ${(event.signatures || []).join(", ")}`;
      case "execution-failed":
        return `${event.code}: ${event.error} (${event.transient ? "transient" : "permanent"}, ${event.retriesRemaining} retries left)`;
      case "retry-pending":
        return `attempt ${event.nextAttempt} in ${event.delay} ms`;
      case "confirmed":
        return `transaction ${event.txHash} on ${event.dex}: ${event.amountOut} out at ${event.executedPrice}`;
      case "failed":
        return `${event.code}: ${event.error} after ${event.totalAttempts} attempts`;
      default:
        return "";
    }
  }

  function closeTimeline() {
    const id = state.selected;
    state.selected = null;
    $("timeline").hidden = true;
    for (const row of state.rows.values()) row.classList.remove("selected");
    const row = id && state.rows.get(id);
    if (row) row.querySelector("button.open").focus();
  }

  // ---- wiring ------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      // Empty: an engine that requires no key (dev, bench).
      signIn($("api-key").value.trim(), false);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("order-form").addEventListener("submit", submitOrder);
    $("filter-form").addEventListener("submit", applyFilters);
    $("clear-filters").addEventListener("click", clearFilters);
    $("close-timeline").addEventListener("click", closeTimeline);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !$("timeline").hidden) closeTimeline();
    });
    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved !== null) signIn(saved, true);
    else $("api-key").focus();
  });
})();

/*
 * The live dashboard page (dashboard/templates/dashboard/index.html).
 *
 * It subscribes and renders, nothing else: the server computes every figure and
 * pushes it with push.js (one socket, resumed across reconnects and server restarts).
 *
 *   dashboard.orders  KPIs, orders by region, the latest orders  (pushed on change)
 *   dashboard.sales   orders/min, revenue last hour, 60 one-minute buckets (beat)
 *   dashboard.system  open sockets, pushes/s, task queue length            (beat)
 *   dashboard.clock   the server time                                      (beat)
 *   broadcast         admin broadcasts, shown as banners; and user.<pk> when signed in
 *
 * Freshness: each dashboard message says when it was computed (computed_at) and when
 * the next one is due (next_due, null for dashboards pushed on change). A dashboard
 * is stale once the server's time passes next_due + GRACE_MS with no newer message:
 * its beat or worker has stopped. The server's time is this browser's clock corrected
 * by the offset seen on live messages, so a viewer's wrong clock marks nothing stale.
 *
 * For tests and curious consoles, window.dashboardState holds the last data of each
 * dashboard and what is stale; the charts are Chart.getChart("sales-chart") and
 * Chart.getChart("regions-chart").
 */
(function () {
  "use strict";

  const DASHBOARDS = ["orders", "sales", "system", "clock"];
  const GRACE_MS = 2500; // a late beat, a slow task, the trip to the browser
  const TICK_MS = 1000;
  const OFFSET_SAMPLES = 10;
  const MAX_BANNERS = 5;

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);

  const state = {
    connection: "connecting",
    orders: null,
    sales: null,
    system: null,
    clock: null,
    stale: { orders: false, sales: false, system: false, clock: false },
    // The browser's time each turned stale.
    staleSince: { orders: null, sales: null, system: null, clock: null },
    receivedAt: { orders: null, sales: null, system: null, clock: null },
    errors: {}, // dashboard -> the server's error message (a refused subscription)
    resets: { orders: 0, sales: 0, system: 0, clock: 0 },
    banners: [], // broadcast ids shown, newest first
  };
  window.dashboardState = state;

  // --- formatting ------------------------------------------------------------------------

  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimal1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const money = new Intl.NumberFormat(undefined, {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
  });

  function number(value, format) {
    const n = Number(value);
    return value === null || value === undefined || Number.isNaN(n) ? "–" : format.format(n);
  }

  function time(iso, withSeconds) {
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return "–";
    const options = { hour: "2-digit", minute: "2-digit" };
    if (withSeconds) options.second = "2-digit";
    return at.toLocaleTimeString([], options);
  }

  function age(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function setValue(id, raw, text) {
    const element = document.getElementById(id);
    element.textContent = text;
    element.dataset.value = raw === null || raw === undefined ? "" : String(raw);
  }

  // --- the server's clock ----------------------------------------------------------------

  // computed_at minus arrival for recent live messages: the server's clock minus ours,
  // less the trip. The largest is the best estimate (the quickest trip); snapshots and
  // replays are old by design and would make the server look behind.
  const offsetSamples = [];

  function noteServerTime(data, frame) {
    if (frame.reset === true || !data || !data.computed_at) return;
    const computed = Date.parse(data.computed_at);
    if (Number.isNaN(computed)) return;
    offsetSamples.push(computed - Date.now());
    if (offsetSamples.length > OFFSET_SAMPLES) offsetSamples.shift();
  }

  function serverNow() {
    return Date.now() + (offsetSamples.length ? Math.max(...offsetSamples) : 0);
  }

  // --- freshness -------------------------------------------------------------------------

  function parts(name) {
    return document.querySelectorAll(`[data-dashboard="${name}"]`);
  }

  function freshness(name) {
    const data = state[name];
    if (state.errors[name]) return [false, `not available: ${state.errors[name]}`];
    if (!data) return [false, "waiting for the first update"];
    const now = serverNow();
    const computed = Date.parse(data.computed_at);
    const updated = Number.isNaN(computed) ? "" : `updated ${age(now - computed)} ago`;
    if (data.next_due === null || data.next_due === undefined) {
      return [false, `${updated || "updated"}, pushed when orders change`];
    }
    const due = Date.parse(data.next_due);
    // A value just received gets the grace too: the snapshot a page opens with may be
    // old because nobody was watching, and the server sends a fresh one right after.
    const waited = Date.now() - state.receivedAt[name];
    if (Number.isNaN(due) || now <= due + GRACE_MS || waited < GRACE_MS) return [false, updated];
    const since = Number.isNaN(computed) ? "" : ` since ${time(data.computed_at, true)}`;
    return [
      true,
      `no update${since} (the next was due at ${time(data.next_due, true)}): ` +
        "the worker or beat may be down",
    ];
  }

  function checkFreshness(name) {
    const [stale, text] = freshness(name);
    if (stale && !state.stale[name]) state.staleSince[name] = Date.now();
    if (!stale) state.staleSince[name] = null;
    state.stale[name] = stale;
    for (const element of parts(name)) {
      element.dataset.stale = String(stale);
      const badge = element.querySelector(".badge-stale");
      if (badge) badge.hidden = !stale;
      const line = element.querySelector(".freshness");
      if (line) line.textContent = text;
    }
  }

  function checkAll() {
    for (const name of DASHBOARDS) checkFreshness(name);
  }

  // --- charts ----------------------------------------------------------------------------

  const charts = { sales: null, regions: null };

  function makeCharts() {
    if (typeof window.Chart !== "function") return; // the numbers still show
    charts.sales = new window.Chart(document.getElementById("sales-chart"), {
      type: "line",
      data: {
        labels: [],
        datasets: [
          {
            label: "Orders",
            data: [],
            yAxisID: "y",
            borderColor: "#2563eb",
            backgroundColor: "rgba(37, 99, 235, 0.12)",
            fill: true,
            tension: 0.25,
            pointRadius: 0,
          },
          {
            label: "Revenue",
            data: [],
            yAxisID: "revenue",
            borderColor: "#059669",
            backgroundColor: "#059669",
            tension: 0.25,
            pointRadius: 0,
          },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom" } },
        scales: {
          x: { ticks: { maxTicksLimit: 8, autoSkip: true } },
          y: { beginAtZero: true, title: { display: true, text: "orders / min" } },
          revenue: {
            position: "right",
            beginAtZero: true,
            grid: { drawOnChartArea: false },
            title: { display: true, text: "revenue / min" },
          },
        },
      },
    });
    charts.regions = new window.Chart(document.getElementById("regions-chart"), {
      type: "bar",
      data: {
        labels: [],
        datasets: [
          { label: "Orders", data: [], yAxisID: "y", backgroundColor: "#2563eb" },
          { label: "Revenue", data: [], yAxisID: "revenue", backgroundColor: "#6ee7b7" },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { position: "bottom" } },
        scales: {
          y: {
            beginAtZero: true,
            ticks: { precision: 0 },
            title: { display: true, text: "orders" },
          },
          revenue: {
            position: "right",
            beginAtZero: true,
            grid: { drawOnChartArea: false },
            title: { display: true, text: "revenue" },
          },
        },
      },
    });
  }

  function setChart(chart, canvasId, labels, series) {
    const canvas = document.getElementById(canvasId);
    canvas.dataset.points = String(labels.length);
    canvas.dataset.last = labels.length ? String(series[0][series[0].length - 1]) : "";
    if (!chart) return;
    chart.data.labels = labels;
    series.forEach((values, index) => {
      chart.data.datasets[index].data = values;
    });
    chart.update("none");
  }

  // --- rendering -------------------------------------------------------------------------

  function list(value) {
    return Array.isArray(value) ? value : [];
  }

  function renderOrders(data) {
    const kpis = data.kpis || {};
    setValue("kpi-orders-today", kpis.orders_today, number(kpis.orders_today, integer));
    setValue("kpi-revenue-today", kpis.revenue_today, number(kpis.revenue_today, money));
    setValue("kpi-average-order", kpis.average_order, number(kpis.average_order, money));
    setValue("kpi-open-orders", kpis.open_orders, number(kpis.open_orders, integer));

    const regions = list(data.by_region);
    setChart(
      charts.regions,
      "regions-chart",
      regions.map((row) => String(row.label || row.region)),
      [regions.map((row) => Number(row.orders)), regions.map((row) => Number(row.revenue))],
    );

    const body = document.getElementById("latest-orders");
    // Rows not shown before flash once (not on the first render).
    const before = new Set(Array.from(body.rows, (row) => row.dataset.orderId).filter(Boolean));
    const rows = list(data.latest).map((order) => {
      const row = document.createElement("tr");
      row.dataset.orderId = String(order.id);
      if (before.size && !before.has(String(order.id))) row.classList.add("new");
      const cells = [
        [String(order.id), "num"],
        [time(order.created_at, true), ""],
        [String(order.customer ?? ""), ""],
        [String(order.region ?? ""), ""],
        [number(order.amount, money), "num"],
        [String(order.status ?? ""), "status"],
      ];
      for (const [text, className] of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (className) cell.className = className;
        row.append(cell);
      }
      row.lastChild.dataset.status = String(order.status ?? "");
      return row;
    });
    if (!rows.length) {
      const row = document.createElement("tr");
      row.className = "empty";
      const cell = document.createElement("td");
      cell.colSpan = 6;
      cell.textContent = "No orders yet.";
      row.append(cell);
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  function renderSales(data) {
    setValue(
      "kpi-orders-per-minute",
      data.orders_per_minute,
      number(data.orders_per_minute, decimal1),
    );
    setValue(
      "kpi-revenue-last-hour",
      data.revenue_last_hour,
      number(data.revenue_last_hour, money),
    );
    const series = list(data.series);
    setChart(
      charts.sales,
      "sales-chart",
      series.map((bucket) => time(bucket.t, false)),
      [
        series.map((bucket) => Number(bucket.orders)),
        series.map((bucket) => Number(bucket.revenue)),
      ],
    );
  }

  function renderSystem(data) {
    setValue("system-open-sockets", data.open_sockets, number(data.open_sockets, integer));
    setValue("system-pushes-per-s", data.pushes_per_s, number(data.pushes_per_s, decimal1));
    setValue("system-queue-length", data.queue_length, number(data.queue_length, integer));
  }

  function renderClock(data, frame) {
    const clock = document.getElementById("clock");
    clock.textContent =
      data.server_time === undefined
        ? "–"
        : `${time(data.server_time, true)} (host up ${Math.floor(data.uptime_s / 3600)} h)`;
    clock.dataset.seq = frame ? String(frame.seq) : "";
  }

  const RENDER = {
    orders: renderOrders,
    sales: renderSales,
    system: renderSystem,
    clock: renderClock,
  };

  function receive(name, data, frame) {
    if (!data || typeof data !== "object") return;
    noteServerTime(data, frame);
    state[name] = data;
    state.receivedAt[name] = Date.now();
    delete state.errors[name];
    RENDER[name](data, frame);
    checkFreshness(name);
  }

  // --- broadcasts ------------------------------------------------------------------------

  const LEVELS = new Set(["info", "warning", "critical"]);

  function showBanner(data) {
    if (!data || typeof data !== "object") return;
    const id = data.id === undefined || data.id === null ? null : String(data.id);
    if (id !== null && state.banners.includes(id)) return; // the same broadcast twice
    const banners = document.getElementById("banners");
    const level = LEVELS.has(data.level) ? data.level : "info";
    const banner = document.createElement("div");
    banner.className = "banner";
    banner.dataset.level = level;
    if (id !== null) banner.dataset.broadcastId = id;
    banner.setAttribute("role", level === "info" ? "status" : "alert");
    const title = document.createElement("strong");
    title.className = "banner-title";
    title.textContent = String(data.title ?? "");
    const body = document.createElement("span");
    body.className = "banner-body";
    body.textContent = String(data.body ?? "");
    const close = document.createElement("button");
    close.type = "button";
    close.className = "banner-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => banner.remove());
    banner.append(title, body, close);
    banners.prepend(banner); // newest first
    while (banners.children.length > MAX_BANNERS) banners.lastElementChild.remove();
    if (id !== null) state.banners.unshift(id);
  }

  // --- the socket ------------------------------------------------------------------------

  function start() {
    makeCharts();
    const client = new window.PushClient();
    window.dashboardClient = client;

    client.on("state", (value) => {
      state.connection = value;
      const badge = document.getElementById("state");
      badge.textContent = value;
      badge.dataset.state = value;
    });
    client.on("error", (frame) => {
      if (!frame || typeof frame.topic !== "string") return;
      const name = frame.topic.slice("dashboard.".length);
      if (frame.topic.startsWith("dashboard.") && DASHBOARDS.includes(name)) {
        state.errors[name] = frame.msg || `error ${frame.code}`;
        checkFreshness(name);
      }
    });

    // An admin may aim a broadcast at any topic: on a dashboard's it is a banner, not data.
    const bannerOr = (render) => (data, frame) =>
      frame.msg === "broadcast" ? showBanner(data) : render(data, frame);

    for (const name of DASHBOARDS) {
      const handler = bannerOr((data, frame) => receive(name, data, frame));
      client.subscribe(`dashboard.${name}`, handler, {
        // Continuity broke: forget what we show. The snapshot that follows at once (when
        // the server holds one) is the whole state again.
        onReset() {
          state[name] = null;
          state.resets[name] += 1;
          RENDER[name]({});
          checkFreshness(name);
        },
      });
    }

    const ignore = () => {};
    client.subscribe("broadcast", bannerOr(ignore));
    if (config.user !== null && config.user !== undefined) {
      client.subscribe(`user.${config.user}`, bannerOr(ignore)); // its other messages: not ours
    }

    setInterval(checkAll, TICK_MS);
  }

  start();
})();

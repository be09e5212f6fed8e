// Composition root of the big screen: builds the views on the page skeleton, loads the dashboard
// over REST, then follows /ws/live (snapshot first, then events applied by key).

import "./style.css";
import { byId, el } from "./dom";
import { LiveConnection, liveUrl } from "./live";
import type { Dashboard, LiveEvent } from "./types";
import { HeaderView } from "./views/header";
import { MachinesView } from "./views/machines";
import { OrdersView } from "./views/orders";
import { StockView } from "./views/stock";
import { TrendView } from "./views/trend";
import { isSupervisorRoute, mountSupervisor, SUPERVISOR_ROUTE } from "./views/supervisor";
import { isSupplierRoute, mountSupplier, SUPPLIER_ROUTE } from "./views/supplier";
import { WorkOrdersView } from "./views/workorders";

const DASHBOARD_URL = "/api/dashboard";
const FETCH_TIMEOUT_MS = 10_000;

function main(): void {
  const header = new HeaderView(
    byId("plant-name"), byId("plant-lines"), byId("gateways"), byId("clock-time"),
    byId("clock-date"), byId("conn-status"), byId("conn-label"),
  );
  const machines = new MachinesView(byId("machines"));
  const workOrders = new WorkOrdersView(byId("work-orders"));
  const stock = new StockView(byId("stock-labels"), byId("stock-values"), byId("stock-chart"));
  const orders = new OrdersView(byId("orders-body"));
  const trend = new TrendView(byId("trend-chart"), byId("trend-note"), byId("trend-kpis"));
  let haveSnapshot = false;

  const applyDashboard = (dashboard: Dashboard, source: "rest" | "snapshot"): void => {
    const lines = [...new Set(dashboard.machines.map((machine) => machine.line))];
    header.setPlant(dashboard.plant.name, lines);
    machines.sync(dashboard.machines);
    workOrders.sync(dashboard.work_orders);
    stock.sync(dashboard.stock);
    orders.sync(dashboard.sales_orders);
    trend.sync(dashboard.machines, Date.now());
    document.body.dataset.loaded = source;
  };

  const onEvent = (event: LiveEvent): void => {
    switch (event.type) {
      case "snapshot":
        haveSnapshot = true;
        applyDashboard(event.data, "snapshot");
        break;
      case "machine.updated":
        machines.update(event.data);
        trend.update(event.data, Date.now());
        break;
      case "work_order.updated":
        workOrders.update(event.data);
        break;
      case "stock.updated":
        stock.update(event.data);
        break;
      case "promise.changed":
        orders.update(event.data);
        break;
      case "sales_order.updated":
        // A cancelled (or closed) line leaves the board; an open one is shown as it is now.
        for (const line of event.data.lines) {
          if (line.status === "open") orders.update(line);
          else orders.remove(line);
        }
        break;
      case "node.updated":
        header.setNode(event.data);
        if (event.data.device !== null) machines.setOnline(event.data.device, event.data.online);
        break;
      case "posting":
        break; // its effects arrive as work_order.updated and stock.updated
    }
  };

  const tick = (): void => {
    const now = new Date();
    header.tick(now);
    trend.tick(now.getTime());
    workOrders.tick(now);
    // Re-align to the next second boundary so the clock never skips or doubles a second.
    window.setTimeout(tick, 1000 - (Date.now() % 1000) + 5);
  };
  tick();

  const live = new LiveConnection({
    url: liveUrl(window.location),
    onEvent,
    onState: (state, retryInMs) => header.setConnection(state, retryInMs),
  });

  // The REST load paints the screen at once; the websocket's snapshot supersedes it, so a REST
  // answer that arrives after the snapshot is older and is dropped.
  void fetch(DASHBOARD_URL, {
    headers: { Accept: "application/json" },
    signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
  })
    .then(async (response) => {
      if (!response.ok) throw new Error(`GET ${DASHBOARD_URL}: HTTP ${response.status}`);
      const dashboard = (await response.json()) as Dashboard;
      if (!haveSnapshot) applyDashboard(dashboard, "rest");
    })
    .catch((error: unknown) => {
      console.warn("taktline: initial dashboard load failed; waiting for the live snapshot", error);
    })
    .finally(() => live.start());
}

/** The big screen at / (as it always was), the supervisor page at #/supervisor, the supplier
 * portal at #/supplier. */
function route(): void {
  // Each page builds once; switching pages reloads, so no page has to tear the other down.
  window.addEventListener("hashchange", () => window.location.reload());
  // Links made here, not in index.html: the page's markup references only bundled assets.
  byId("page-nav").append(
    el("a", "", { href: "#/", "data-testid": "nav-board" }, ["大屏 Board"]),
    el("a", "", { href: SUPERVISOR_ROUTE, "data-testid": "nav-supervisor" }, ["主管 Supervisor"]),
    el("a", "", { href: SUPPLIER_ROUTE, "data-testid": "nav-supplier" }, ["供应商 Supplier"]),
  );
  if (isSupplierRoute(window.location.hash)) {
    // The supplier portal: the supervisor page's frame, its own content.
    document.body.classList.add("supervisor-page");
    const root = document.createElement("main");
    root.className = "supervisor supplier";
    root.dataset.testid = "supplier";
    byId("board").replaceWith(root);
    byId("plant-name").textContent = "供应商 Supplier";
    mountSupplier(root);
    return;
  }
  if (!isSupervisorRoute(window.location.hash)) {
    main();
    return;
  }
  document.body.classList.add("supervisor-page");
  const root = document.createElement("main");
  root.className = "supervisor";
  root.dataset.testid = "supervisor";
  byId("board").replaceWith(root);
  byId("plant-name").textContent = "主管 Supervisor";
  mountSupervisor(root);
}

route();

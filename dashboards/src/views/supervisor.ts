// The supervisor page (#/supervisor): stock, MRP suggestions with approve, purchase orders, sales
// orders with their promises, the demand forecast. Everything through the REST API; a refused
// request is shown with the cloud's reason. The sales tab follows /ws/live (promise.changed,
// sales_order.updated) so promises move on the page as the plant moves them.

import { describe } from "../api";
import { el } from "../dom";
import { LiveConnection, liveUrl } from "../live";
import type { LiveEvent } from "../types";
import { SupervisorForecastView } from "./supForecast";
import { SupervisorPlanningView } from "./supPlanning";
import { SupervisorPurchasingView } from "./supPurchasing";
import { SupervisorSalesView } from "./supSales";
import { SupervisorStockView } from "./supStock";

export const SUPERVISOR_ROUTE = "#/supervisor";

/** True when the hash names the supervisor page (#/supervisor or #/supervisor/<tab>). */
export function isSupervisorRoute(hash: string): boolean {
  return hash === SUPERVISOR_ROUTE || hash.startsWith(`${SUPERVISOR_ROUTE}/`);
}

type Tab = "stock" | "planning" | "purchasing" | "sales" | "forecast";
const TABS: [Tab, string][] = [
  ["stock", "库存 Stock"],
  ["planning", "计划 Planning"],
  ["purchasing", "采购 Purchasing"],
  ["sales", "销售 Sales"],
  ["forecast", "预测 Forecast"],
];

/** Build the page into `root` and load every tab. */
export function mountSupervisor(root: HTMLElement): void {
  const error = el("div", "sup-error", { "data-testid": "sup-error", role: "alert", hidden: "" });
  const report = (failure: unknown): void => {
    error.textContent = `请求被拒绝 Refused — ${describe(failure)}`;
    error.hidden = false;
    console.warn("taktline supervisor:", failure);
  };
  const clear = (): void => {
    error.hidden = true;
    error.textContent = "";
  };
  const stock = new SupervisorStockView();
  const purchasing = new SupervisorPurchasingView({ report, documentsChanged: () => undefined });
  const planning = new SupervisorPlanningView({
    report,
    documentsChanged: () => {
      clear();
      void purchasing.load().catch(report);
    },
  });
  const sales = new SupervisorSalesView({
    report,
    documentsChanged: () => {
      clear();
      void planning.load().catch(report);
    },
  });
  const forecast = new SupervisorForecastView(report);
  const panels: Record<Tab, { element: HTMLElement; load(): Promise<void> }> = {
    stock,
    planning,
    purchasing,
    sales,
    forecast,
  };
  const buttons = TABS.map(([tab, label]) => {
    const button = el("button", "sup-tab", { "data-testid": `sup-tab-${tab}`, "data-tab": tab }, [
      label,
    ]);
    button.addEventListener("click", () => {
      clear();
      show(tab);
      void panels[tab].load().catch(report);
    });
    return button;
  });
  const show = (tab: Tab): void => {
    for (const button of buttons) button.classList.toggle("active", button.dataset.tab === tab);
    for (const [name, panel] of Object.entries(panels)) panel.element.hidden = name !== tab;
    root.dataset.tab = tab;
  };
  root.replaceChildren(
    el("nav", "sup-tabs", {}, buttons),
    error,
    stock.element,
    planning.element,
    purchasing.element,
    sales.element,
    forecast.element,
  );
  const first = TABS.find(([tab]) => window.location.hash === `${SUPERVISOR_ROUTE}/${tab}`);
  show(first?.[0] ?? "stock");
  void Promise.all(Object.values(panels).map((panel) => panel.load()))
    .catch(report)
    .finally(() => {
      document.body.dataset.loaded = "supervisor";
    });
  followSales(sales, planning, stock);
}

/** Promises and orders as they change (a snapshot, after a reconnect, reads the tab again). */
function followSales(
  sales: SupervisorSalesView,
  planning: SupervisorPlanningView,
  stock: SupervisorStockView,
): void {
  let connected = false;
  const onEvent = (event: LiveEvent): void => {
    switch (event.type) {
      case "snapshot":
        if (connected) void sales.load().catch((error: unknown) => console.warn(error));
        connected = true;
        break;
      case "promise.changed":
        sales.promiseChanged(event.data);
        break;
      case "sales_order.updated":
        sales.orderUpdated(event.data);
        break;
      case "mrp.progress":
      case "mrp.run.finished":
        planning.mrpEvent(event.type, event.data);
        break;
      case "reservation.created":
      case "reservation.released":
      case "reservation.consumed":
        void stock.load().catch((error: unknown) => console.warn(error));
        break;
      default:
        break;
    }
  };
  new LiveConnection({
    url: liveUrl(window.location),
    onEvent,
    onState: (state) => sales.setLive(state),
  }).start();
}

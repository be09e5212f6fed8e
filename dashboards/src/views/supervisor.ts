// The supervisor page (#/supervisor): stock, MRP suggestions with approve, purchase orders.
// Everything through the REST API; a refused request is shown with the cloud's reason.

import { describe } from "../api";
import { el } from "../dom";
import { SupervisorPlanningView } from "./supPlanning";
import { SupervisorPurchasingView } from "./supPurchasing";
import { SupervisorStockView } from "./supStock";

export const SUPERVISOR_ROUTE = "#/supervisor";

/** True when the hash names the supervisor page (#/supervisor or #/supervisor/<tab>). */
export function isSupervisorRoute(hash: string): boolean {
  return hash === SUPERVISOR_ROUTE || hash.startsWith(`${SUPERVISOR_ROUTE}/`);
}

type Tab = "stock" | "planning" | "purchasing";
const TABS: [Tab, string][] = [
  ["stock", "库存 Stock"],
  ["planning", "计划 Planning"],
  ["purchasing", "采购 Purchasing"],
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
  const panels: Record<Tab, { element: HTMLElement; load(): Promise<void> }> = {
    stock,
    planning,
    purchasing,
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
  );
  const first = TABS.find(([tab]) => window.location.hash === `${SUPERVISOR_ROUTE}/${tab}`);
  show(first?.[0] ?? "stock");
  void Promise.all(Object.values(panels).map((panel) => panel.load()))
    .catch(report)
    .finally(() => {
      document.body.dataset.loaded = "supervisor";
    });
}

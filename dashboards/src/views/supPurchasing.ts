// Supervisor · Purchasing: purchase orders with status and the supplier's confirmed dates, the
// late/short alerts, and Send for a draft.

import { getJson, postJson } from "../api";
import { formatDecimal } from "../decimal";
import { el } from "../dom";
import { headOf, type SupervisorHooks } from "./supPlanning";
import { emptyRow } from "./supStock";

interface PoLine {
  number: number;
  item: string;
  quantity: string;
  needed: string;
  confirmed_date: string | null;
  confirmed_quantity: string | null;
  expected_date: string;
  received: string;
}

export interface PurchaseOrder {
  number: string;
  supplier: string;
  currency: string;
  status: string;
  order_date: string;
  amount: string;
  lines: PoLine[];
}

interface Alert {
  kind: string;
  order: string;
  line: number;
  message: string;
}

const PO_COLUMNS = ["Order", "Supplier", "Status", "Lines (item qty, needed → confirmed)", "Amount", ""];

export class SupervisorPurchasingView {
  readonly element = el("section", "sup-panel", { "data-testid": "sup-purchasing" });
  private readonly orders = el("tbody", "", { "data-testid": "purchase-orders" });
  private readonly alerts = el("ul", "sup-alerts", { "data-testid": "purchasing-alerts" });

  constructor(private readonly hooks: SupervisorHooks) {
    this.element.append(
      el("h2", "panel-title", {}, ["采购 ", el("span", "", {}, ["Purchase orders"])]),
      el("table", "sup-table", {}, [headOf(PO_COLUMNS), this.orders]),
      el("h3", "sup-subtitle", {}, ["Alerts"]),
      this.alerts,
    );
  }

  async load(): Promise<void> {
    const [orders, alerts] = await Promise.all([
      getJson<PurchaseOrder[]>("/api/purchase-orders"),
      getJson<Alert[]>("/api/purchasing/alerts"),
    ]);
    this.orders.replaceChildren(...orders.map((order) => this.orderRow(order)));
    if (orders.length === 0) this.orders.append(emptyRow(PO_COLUMNS.length, "No purchase orders"));
    this.alerts.replaceChildren(
      ...alerts.map((alert) =>
        el("li", "sup-late", { "data-testid": `alert-${alert.order}-${alert.line}-${alert.kind}` }, [
          alert.message,
        ]),
      ),
    );
    if (alerts.length === 0) this.alerts.append(el("li", "sup-note", {}, ["No alerts"]));
  }

  private orderRow(order: PurchaseOrder): HTMLTableRowElement {
    const id = `po-${order.number}`;
    const actions = el("td");
    if (order.status === "draft") {
      const send = el("button", "sup-button", { "data-testid": `${id}-send` }, ["发送 Send"]);
      send.addEventListener("click", () => {
        send.disabled = true;
        postJson<PurchaseOrder>(`/api/purchase-orders/${encodeURIComponent(order.number)}/send`)
          .then(() => this.load())
          .catch((error: unknown) => {
            send.disabled = false;
            this.hooks.report(error);
          });
      });
      actions.append(send);
    }
    const lines = order.lines.map((line) => {
      const confirmed =
        line.confirmed_date === null
          ? "unconfirmed"
          : `${line.confirmed_date} ×${formatDecimal(line.confirmed_quantity)}`;
      return el("div", "", { "data-testid": `${id}-line-${line.number}` }, [
        `${line.item} ${formatDecimal(line.quantity)}, ${line.needed} → ${confirmed}`,
      ]);
    });
    return el("tr", "", { "data-testid": id, "data-status": order.status }, [
      el("td", "", {}, [order.number]),
      el("td", "", {}, [order.supplier]),
      el("td", "", { "data-testid": `${id}-status` }, [order.status]),
      el("td", "", {}, lines),
      el("td", "num", {}, [`${formatDecimal(order.amount)} ${order.currency}`]),
      actions,
    ]);
  }
}

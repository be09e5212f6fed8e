// Supervisor · Sales: sales orders with their lines, requested vs promised, the current reason and
// an at-risk highlight; per line its promise history with the reason chain (expand); a form to
// book an order; change or cancel a line, cancel an order. Live: promise.changed and
// sales_order.updated re-draw the order they concern (and re-read an expanded history).

import { getJson, patchJson, postJson } from "../api";
import { formatDecimal } from "../decimal";
import { el } from "../dom";
import { formatDateTime, parseInstant } from "../time";
import type { PromiseRow, SalesOrderLineRow, SalesOrderRow } from "../types";
import type { SupervisorHooks } from "./supPlanning";
import { headOf } from "./supPlanning";
import { emptyRow } from "./supStock";

interface Customer {
  code: string;
  name: string;
}

interface Item {
  sku: string;
  name: string;
  kind: string;
  uom: string;
}

type Status = SalesOrderRow["status"];

const COLUMNS = ["Order / line", "Customer", "Item", "Qty", "Requested", "Promised", "Reason", "Risk", ""];

const instant = (text: string | null | undefined): string => {
  const date = parseInstant(text);
  return date === null ? "—" : formatDateTime(date);
};

const lineKey = (order: string, line: number): string => `${order}-${line}`;

/** The order's status from its lines': open while one is, cancelled when all are, else closed. */
function statusOf(lines: readonly SalesOrderLineRow[]): Status {
  const statuses = lines.map((line) => line.status ?? "open");
  if (statuses.includes("open")) return "open";
  if (statuses.length > 0 && statuses.every((s) => s === "cancelled")) return "cancelled";
  return "closed";
}

/** "YYYY-MM-DD" of a local date (the date input's value). */
function isoDay(date: Date): string {
  const pad = (value: number): string => String(value).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

export class SupervisorSalesView {
  readonly element = el("section", "sup-panel", { "data-testid": "sup-sales" });
  private readonly table = el("table", "sup-table sales-table", { "data-testid": "sales-orders" });
  private readonly liveNote = el("span", "sup-note", { "data-testid": "sales-live" }, ["offline"]);
  private readonly customer = el("select", "sup-input", { "data-testid": "sales-customer" });
  private readonly item = el("select", "sup-input", { "data-testid": "sales-item" });
  private readonly quantity = el("input", "sup-input", {
    "data-testid": "sales-quantity",
    inputmode: "decimal",
    placeholder: "Qty",
    size: "8",
  });
  private readonly requested = el("input", "sup-input", {
    "data-testid": "sales-requested",
    type: "date",
  });
  private readonly number = el("input", "sup-input", {
    "data-testid": "sales-number",
    placeholder: "SO-… (auto)",
    size: "10",
  });
  private readonly submit = el("button", "sup-button", { "data-testid": "sales-submit", type: "submit" }, [
    "下单 Book order",
  ]);
  private readonly result = el("span", "sup-result", { "data-testid": "sales-result" });
  private readonly orders = new Map<string, SalesOrderRow>();
  private readonly groups = new Map<string, HTMLTableSectionElement>();
  private readonly expanded = new Set<string>();
  private readonly empty = el("tbody", "", {}, [emptyRow(COLUMNS.length, "No sales orders")]);

  constructor(private readonly hooks: SupervisorHooks) {
    const form = el("form", "sup-form", { "data-testid": "sales-form" }, [
      el("label", "", {}, ["Customer ", this.customer]),
      el("label", "", {}, ["Item ", this.item]),
      el("label", "", {}, ["Qty ", this.quantity]),
      el("label", "", {}, ["Requested ", this.requested]),
      el("label", "", {}, ["No. ", this.number]),
      this.submit,
      this.result,
    ]);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.book();
    });
    this.requested.value = isoDay(new Date(Date.now() + 7 * 86_400_000));
    this.table.append(headOf(COLUMNS), this.empty);
    this.element.append(
      el("h2", "panel-title", {}, ["销售 ", el("span", "", {}, ["Sales orders & promises"])]),
      el("h3", "sup-subtitle", {}, ["New order"]),
      form,
      el("div", "sup-toolbar", {}, [el("h3", "sup-subtitle", {}, ["Orders"]), this.liveNote]),
      this.table,
    );
  }

  async load(): Promise<void> {
    const [customers, items, lines] = await Promise.all([
      getJson<Customer[]>("/api/customers"),
      getJson<Item[]>("/api/items"),
      getJson<SalesOrderLineRow[]>("/api/sales-orders"),
    ]);
    fillSelect(this.customer, customers.map((c) => [c.code, `${c.code} · ${c.name}`]));
    const sold = items.filter((i) => i.kind === "finished");
    fillSelect(this.item, (sold.length > 0 ? sold : items).map((i) => [i.sku, `${i.sku} · ${i.name}`]));
    const byOrder = new Map<string, SalesOrderLineRow[]>();
    for (const line of lines) byOrder.set(line.order, [...(byOrder.get(line.order) ?? []), line]);
    this.orders.clear();
    for (const [number, rows] of byOrder) {
      this.orders.set(number, {
        number,
        customer: rows[0]?.customer ?? "",
        created_at: "",
        status: statusOf(rows),
        lines: rows,
      });
    }
    this.renderAll();
  }

  /** The live feed's state (the page owns the connection). */
  setLive(state: string): void {
    this.liveNote.textContent = state === "live" ? "● live" : state;
    this.liveNote.dataset.state = state;
  }

  /** A promise changed: show it on its line (a line not known yet: read everything again). */
  promiseChanged(row: SalesOrderLineRow): void {
    const order = this.orders.get(row.order);
    const index = order?.lines.findIndex((line) => line.line === row.line) ?? -1;
    if (order === undefined || index < 0) {
      void this.load().catch((error: unknown) => this.hooks.report(error));
      return;
    }
    const current = order.lines[index];
    order.lines[index] = { ...row, status: current?.status ?? "open", cancelled_at: current?.cancelled_at ?? null };
    this.render(order.number);
  }

  /** An order was booked, changed or cancelled: draw it as it is now. */
  orderUpdated(row: SalesOrderRow): void {
    this.orders.set(row.number, { ...row, lines: [...row.lines] });
    this.render(row.number);
  }

  private async book(): Promise<void> {
    const body: Record<string, unknown> = {
      customer: this.customer.value,
      lines: [
        { item: this.item.value, quantity: this.quantity.value.trim(), requested_date: this.requested.value },
      ],
    };
    const number = this.number.value.trim();
    if (number !== "") body.number = number;
    this.submit.disabled = true;
    this.result.textContent = "";
    try {
      const order = await postJson<SalesOrderRow>("/api/sales-orders", body);
      this.orderUpdated(order);
      this.result.textContent = `created ${order.number}`;
      this.result.dataset.number = order.number;
      this.number.value = "";
      this.hooks.documentsChanged();
    } catch (error) {
      this.hooks.report(error);
    } finally {
      this.submit.disabled = false;
    }
  }

  private renderAll(): void {
    for (const group of this.groups.values()) group.remove();
    this.groups.clear();
    for (const number of [...this.orders.keys()].sort()) this.render(number);
    if (this.groups.size === 0) this.table.append(this.empty);
  }

  private render(number: string): void {
    const order = this.orders.get(number);
    if (order === undefined) return;
    const group = this.group(order);
    const previous = this.groups.get(number);
    if (previous !== undefined) previous.replaceWith(group);
    else {
      // Keep the orders sorted by number.
      const after = [...this.groups.keys()].sort().find((other) => other > number);
      this.table.insertBefore(group, after === undefined ? null : (this.groups.get(after) ?? null));
    }
    this.groups.set(number, group);
    this.empty.remove();
  }

  private group(order: SalesOrderRow): HTMLTableSectionElement {
    const id = `so-${order.number}`;
    const status = order.lines.length > 0 ? statusOf(order.lines) : order.status;
    const atRisk = order.lines.some((line) => line.at_risk && (line.status ?? "open") === "open");
    const cancel = el("button", "sup-button", { "data-testid": `${id}-cancel` }, ["取消 Cancel order"]);
    cancel.hidden = status !== "open";
    cancel.addEventListener("click", () =>
      this.act(cancel, () => postJson<SalesOrderRow>(`/api/sales-orders/${encodeURIComponent(order.number)}/cancel`)),
    );
    const head = el("tr", "sales-order-head", { "data-testid": id, "data-status": status }, [
      el("td", "", { colspan: String(COLUMNS.length - 1) }, [
        el("strong", "", {}, [order.number]),
        ` · ${order.customer} · `,
        el("span", `sales-status sales-${status}`, { "data-testid": `${id}-status` }, [status]),
        atRisk ? el("span", "risk-badge sales-risk", {}, [" ⚠ 风险 at risk"]) : "",
      ]),
      el("td", "", {}, [cancel]),
    ]);
    const rows: HTMLTableRowElement[] = [head];
    for (const line of order.lines) rows.push(...this.lineRows(line));
    return el("tbody", "sales-order", { "data-order": order.number }, rows);
  }

  private lineRows(line: SalesOrderLineRow): HTMLTableRowElement[] {
    const key = lineKey(line.order, line.line);
    const id = `sl-${key}`;
    const status = line.status ?? "open";
    const open = status === "open";
    const risky = open && line.at_risk;
    const toggle = el("button", "sup-button sup-small", { "data-testid": `${id}-toggle` }, [
      this.expanded.has(key) ? "▾ History" : "▸ History",
    ]);
    const cancel = el("button", "sup-button sup-small", { "data-testid": `${id}-cancel` }, ["Cancel line"]);
    cancel.hidden = !open;
    const path = `/api/sales-orders/${encodeURIComponent(line.order)}/lines/${line.line}`;
    cancel.addEventListener("click", () => this.act(cancel, () => postJson<SalesOrderRow>(`${path}/cancel`)));
    const row = el(
      "tr",
      `sales-line${risky ? " at-risk" : ""}${open ? "" : " sales-closed"}`,
      { "data-testid": id, "data-at-risk": String(risky), "data-status": status },
      [
        el("td", "", {}, [`${line.order} #${line.line}`]),
        el("td", "", {}, [line.customer]),
        el("td", "", {}, [line.item]),
        el("td", "num", { "data-testid": `${id}-quantity`, "data-value": line.quantity }, [
          formatDecimal(line.quantity),
        ]),
        el("td", "", { "data-testid": `${id}-requested` }, [line.requested_date ?? "—"]),
        el("td", "", { "data-testid": `${id}-promised`, "data-value": line.promised_at ?? "" }, [
          instant(line.promised_at),
        ]),
        el("td", "sales-reason", { "data-testid": `${id}-reason` }, [line.promise_reason ?? ""]),
        el("td", "", { "data-testid": `${id}-risk` }, [
          open ? (line.at_risk ? "⚠ 风险 AT RISK" : "✓ 按期 on time") : status,
        ]),
        el("td", "sales-actions", {}, [toggle, cancel]),
      ],
    );
    const details = el("tr", "sales-details", { "data-testid": `${id}-details` }, [
      el("td", "", { colspan: String(COLUMNS.length) }, open ? [this.changeForm(line, path)] : []),
    ]);
    const history = el("div", "sales-history", { "data-testid": `${id}-history` });
    details.firstElementChild?.append(history);
    details.hidden = !this.expanded.has(key);
    if (!details.hidden) void this.loadHistory(line, history);
    toggle.addEventListener("click", () => {
      details.hidden = !details.hidden;
      toggle.textContent = details.hidden ? "▸ History" : "▾ History";
      if (details.hidden) this.expanded.delete(key);
      else {
        this.expanded.add(key);
        void this.loadHistory(line, history);
      }
    });
    return [row, details];
  }

  private changeForm(line: SalesOrderLineRow, path: string): HTMLElement {
    const id = `sl-${lineKey(line.order, line.line)}`;
    const quantity = el("input", "sup-input", { "data-testid": `${id}-new-quantity`, size: "8" });
    quantity.value = line.quantity;
    const requested = el("input", "sup-input", { "data-testid": `${id}-new-requested`, type: "date" });
    requested.value = line.requested_date ?? "";
    const apply = el("button", "sup-button sup-small", { "data-testid": `${id}-change`, type: "submit" }, [
      "改 Change",
    ]);
    const form = el("form", "sup-form sales-change", {}, [
      el("label", "", {}, ["Qty ", quantity]),
      el("label", "", {}, ["Requested ", requested]),
      apply,
    ]);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const change: Record<string, string> = {};
      if (quantity.value.trim() !== line.quantity) change.quantity = quantity.value.trim();
      if (requested.value !== line.requested_date) change.requested_date = requested.value;
      this.act(apply, () => patchJson<SalesOrderRow>(path, change));
    });
    return form;
  }

  /** Run a change; the answer (the order as it is now) is drawn, a refusal reported. */
  private act(button: HTMLButtonElement, change: () => Promise<SalesOrderRow>): void {
    button.disabled = true;
    change()
      .then((order) => {
        this.orderUpdated(order);
        this.hooks.documentsChanged();
      })
      .catch((error: unknown) => {
        button.disabled = false;
        this.hooks.report(error);
      });
  }

  private async loadHistory(line: SalesOrderLineRow, into: HTMLElement): Promise<void> {
    const id = `sl-${lineKey(line.order, line.line)}`;
    try {
      const path = `/api/sales-orders/${encodeURIComponent(line.order)}/lines/${line.line}/promises`;
      const history = await getJson<PromiseRow[]>(path);
      const items = history
        .map((promise, index) =>
          el("li", "sales-promise", { "data-testid": `${id}-h-${index + 1}` }, [
            el("span", "sup-note", {}, [`${instant(promise.at)} → `]),
            el("strong", "", {}, [instant(promise.promised_at)]),
            ` ${promise.reason}`,
            promise.steps.length === 0
              ? ""
              : el(
                  "ol",
                  "sales-steps",
                  {},
                  promise.steps.map((step, j) =>
                    el("li", `step-${step.kind}`, { "data-testid": `${id}-h-${index + 1}-step-${j + 1}` }, [
                      el("span", "step-kind", {}, [step.kind]),
                      ` ${step.text || step.reference}`,
                    ]),
                  ),
                ),
          ]),
        )
        .reverse(); // newest first
      into.replaceChildren(
        el("div", "sup-note", {}, [`Promise history (${history.length}), newest first`]),
        el("ul", "sales-promises", { "data-count": String(history.length) }, items),
      );
      into.dataset.count = String(history.length);
    } catch (error) {
      this.hooks.report(error);
    }
  }
}

function fillSelect(select: HTMLSelectElement, options: [string, string][]): void {
  const keep = select.value;
  select.replaceChildren(...options.map(([value, label]) => el("option", "", { value }, [label])));
  if (options.some(([value]) => value === keep)) select.value = keep;
}

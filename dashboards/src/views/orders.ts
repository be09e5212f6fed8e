// Sales order lines with the requested date, the current delivery promise (and the one it replaced,
// after a promise.changed event) and an at-risk highlight.

import { formatDecimal } from "../decimal";
import { el, flash, setAttr, setText } from "../dom";
import { formatCalendarDate, formatDateTime, parseInstant } from "../time";
import { promiseKey, type SalesOrderLineRow } from "../types";

interface Line {
  root: HTMLTableRowElement;
  customer: HTMLElement;
  item: HTMLElement;
  quantity: HTMLElement;
  requested: HTMLElement;
  promised: HTMLElement;
  previous: HTMLElement;
  reason: HTMLElement;
  status: HTMLElement;
}

const formatInstant = (text: string | null | undefined): string => {
  const date = parseInstant(text);
  return date === null ? "—" : formatDateTime(date);
};

export class OrdersView {
  private readonly lines = new Map<string, Line>();
  private readonly empty: HTMLTableRowElement;

  constructor(private readonly body: HTMLElement) {
    this.empty = el("tr", "empty-row", {}, [
      el("td", "empty", { colspan: "7" }, ["无未交订单 · No open sales orders"]),
    ]);
  }

  /** Replace all sales order lines (snapshot). */
  sync(rows: readonly SalesOrderLineRow[]): void {
    const keys = new Set(rows.map(promiseKey));
    for (const [key, line] of this.lines) {
      if (!keys.has(key)) {
        line.root.remove();
        this.lines.delete(key);
      }
    }
    rows.forEach((row, index) => {
      const line = this.apply(row, false);
      if (this.body.children[index] !== line.root) {
        this.body.insertBefore(line.root, this.body.children[index] ?? null);
      }
    });
    this.toggleEmpty();
  }

  /** Apply one sales order line (promise.changed). */
  update(row: SalesOrderLineRow): void {
    this.apply(row, true);
    this.toggleEmpty();
  }

  /** Take a line off the board (cancelled or closed). */
  remove(row: Pick<SalesOrderLineRow, "order" | "line">): void {
    const key = promiseKey(row);
    this.lines.get(key)?.root.remove();
    this.lines.delete(key);
    this.toggleEmpty();
  }

  private toggleEmpty(): void {
    if (this.lines.size === 0) this.body.append(this.empty);
    else this.empty.remove();
  }

  private apply(row: SalesOrderLineRow, isChange: boolean): Line {
    const key = promiseKey(row);
    let line = this.lines.get(key);
    if (line === undefined) {
      line = this.build(row);
      this.lines.set(key, line);
      this.body.append(line.root);
    }
    setText(line.customer, row.customer);
    setText(line.item, row.item);
    setText(line.quantity, formatDecimal(row.quantity));
    setText(line.requested, formatCalendarDate(row.requested_date));
    const promisedBefore = line.promised.textContent;
    setText(line.promised, formatInstant(row.promised_at));
    setAttr(line.promised, "data-value", row.promised_at ?? "");
    if (row.previous_promised_at !== undefined) {
      // Keep showing the promise this one replaced until the next change; a "change" that lands
      // on the same minute is not worth a strike-through.
      const previous = formatInstant(row.previous_promised_at);
      const same = previous === "—" || previous === line.promised.textContent;
      setText(line.previous, same ? "" : `原 was ${previous}`);
    }
    setText(line.reason, row.promise_reason ?? "");
    setAttr(line.root, "data-at-risk", row.at_risk ? "true" : "false");
    setText(line.status, row.at_risk ? "⚠ 风险 AT RISK" : "✓ 按期 ON TIME");
    if (isChange && promisedBefore !== line.promised.textContent) flash(line.root);
    return line;
  }

  private build(row: SalesOrderLineRow): Line {
    const testid = `promise-${promiseKey(row)}`;
    const customer = el("span", "order-customer");
    const item = el("span", "order-item");
    const quantity = el("span", "", { "data-testid": `${testid}-quantity` });
    const requested = el("span", "", { "data-testid": `${testid}-requested` });
    const promised = el("span", "order-promised", { "data-testid": `${testid}-promised` });
    const previous = el("span", "order-previous", { "data-testid": `${testid}-previous` });
    const reason = el("span", "order-reason");
    const status = el("span", "risk-badge", { "data-testid": `${testid}-status` });
    const root = el("tr", "order", { "data-testid": testid }, [
      el("td", "", {}, [
        el("div", "order-id", {}, [
          el("span", "order-number", {}, [row.order]),
          el("span", "order-line", {}, [`#${row.line}`]),
        ]),
      ]),
      el("td", "", {}, [customer]),
      el("td", "", {}, [item]),
      el("td", "num", {}, [quantity]),
      el("td", "", {}, [requested]),
      el("td", "", {}, [el("div", "promise-cell", {}, [promised, previous, reason])]),
      el("td", "", {}, [status]),
    ]);
    return { root, customer, item, quantity, requested, promised, previous, reason, status };
  }
}

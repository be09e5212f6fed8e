// Supervisor · Stock: balances by item and location (on hand, reserved, available, value).

import { getJson } from "../api";
import { formatDecimal } from "../decimal";
import { el } from "../dom";

export interface BalanceRow {
  item: string;
  name: string;
  location: string;
  on_hand: string;
  reserved: string;
  available: string;
  uom: string;
  unit_cost: string | null;
  value: string | null;
}

const COLUMNS = ["Item", "Name", "Location", "On hand", "Reserved", "Available", "Unit cost", "Value"];

export class SupervisorStockView {
  readonly element = el("section", "sup-panel", { "data-testid": "sup-stock" });
  private readonly body = el("tbody");

  constructor() {
    const head = el("tr", "", {}, COLUMNS.map((c, i) => el("th", i >= 3 ? "num" : "", {}, [c])));
    this.element.append(
      el("h2", "panel-title", {}, ["库存 ", el("span", "", {}, ["Stock by location"])]),
      el("table", "sup-table", {}, [el("thead", "", {}, [head]), this.body]),
    );
  }

  async load(): Promise<void> {
    const rows = await getJson<BalanceRow[]>("/api/stock/balances");
    this.body.replaceChildren(
      ...rows.map((row) => {
        const id = `bal-${row.item}-${row.location}`;
        const num = (suffix: string, text: string | null): HTMLElement =>
          el("td", "num", { "data-testid": `${id}-${suffix}`, "data-value": text ?? "" }, [
            formatDecimal(text),
          ]);
        return el("tr", "", { "data-testid": id }, [
          el("td", "", {}, [row.item]),
          el("td", "", {}, [row.name]),
          el("td", "", {}, [row.location]),
          num("on-hand", row.on_hand),
          num("reserved", row.reserved),
          num("available", row.available),
          num("unit-cost", row.unit_cost),
          num("value", row.value),
        ]);
      }),
    );
    if (rows.length === 0) this.body.append(emptyRow(COLUMNS.length, "No stock"));
  }
}

export function emptyRow(span: number, text: string): HTMLTableRowElement {
  return el("tr", "empty-row", {}, [el("td", "", { colspan: String(span) }, [text])]);
}

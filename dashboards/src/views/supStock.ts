// Supervisor · Stock: balances by item and location (on hand, reserved, available, value), stock
// by location and lot, a cycle count form, and the counts waiting for approval (approve/reject).
// The user's name is kept in localStorage and sent as X-Taktline-User (a stand-in for real
// authentication): the counter of an adjustment above the plant's threshold may not approve it.

import { describe, getJson, postJsonAs } from "../api";
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

export interface LotRow {
  item: string;
  name: string;
  location: string;
  lot: string | null;
  on_hand: string;
  uom: string;
}

export interface CountRow {
  id: number;
  item: string;
  location: string;
  lot: string | null;
  counted: string;
  book: string;
  difference: string;
  unit_cost: string;
  value: string;
  threshold: string;
  status: string;
  counted_by: string;
  counted_at: string;
  decided_by: string | null;
  decided_at: string | null;
}

const COLUMNS = ["Item", "Name", "Location", "On hand", "Reserved", "Available", "Unit cost", "Value"];
const LOT_COLUMNS = ["Item", "Location", "Lot", "On hand"];
const COUNT_COLUMNS = ["Count", "Item", "Location", "Lot", "Counted", "Book", "Difference", "Value", "Counted by", ""];
const USER_KEY = "taktline.user";

function storedUser(): string {
  try {
    return window.localStorage.getItem(USER_KEY) ?? "";
  } catch {
    return "";
  }
}

function storeUser(name: string): void {
  try {
    window.localStorage.setItem(USER_KEY, name);
  } catch {
    // Private mode: the name lasts as long as the page.
  }
}

export class SupervisorStockView {
  readonly element = el("section", "sup-panel", { "data-testid": "sup-stock" });
  private readonly body = el("tbody");
  private readonly lotBody = el("tbody", "", { "data-testid": "stock-lots" });
  private readonly pendingBody = el("tbody", "", { "data-testid": "counts-pending" });
  private readonly user = el("input", "sup-input", {
    "data-testid": "count-user",
    placeholder: "your name",
    maxlength: "64",
  });
  private readonly item = el("input", "sup-input", { "data-testid": "count-item", list: "count-items" });
  private readonly location = el("input", "sup-input", {
    "data-testid": "count-location",
    list: "count-locations",
  });
  private readonly lot = el("input", "sup-input", { "data-testid": "count-lot", placeholder: "lot (optional)" });
  private readonly counted = el("input", "sup-input", {
    "data-testid": "count-quantity",
    inputmode: "decimal",
    placeholder: "counted",
  });
  private readonly submit = el("button", "sup-button", { "data-testid": "count-submit", type: "submit" }, [
    "盘点 Count",
  ]);
  private readonly result = el("span", "sup-result", { "data-testid": "count-result" });
  private readonly error = el("div", "sup-error", { "data-testid": "count-error", role: "alert", hidden: "" });
  private readonly items = el("datalist", "", { id: "count-items" });
  private readonly locations = el("datalist", "", { id: "count-locations" });

  constructor() {
    const head = el("tr", "", {}, COLUMNS.map((c, i) => el("th", i >= 3 ? "num" : "", {}, [c])));
    this.user.value = storedUser();
    this.user.addEventListener("change", () => storeUser(this.user.value.trim()));
    const form = el("form", "sup-toolbar", { "data-testid": "count-form" }, [
      el("label", "", {}, ["User ", this.user]),
      el("label", "", {}, ["Item ", this.item]),
      el("label", "", {}, ["Location ", this.location]),
      this.lot,
      this.counted,
      this.submit,
      this.result,
      this.items,
      this.locations,
    ]);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.count();
    });
    this.element.append(
      el("h2", "panel-title", {}, ["库存 ", el("span", "", {}, ["Stock by location"])]),
      el("table", "sup-table", {}, [el("thead", "", {}, [head]), this.body]),
      el("h3", "sup-subtitle", {}, ["批次 Stock by location and lot"]),
      el("table", "sup-table", {}, [headOf(LOT_COLUMNS), this.lotBody]),
      el("h3", "sup-subtitle", {}, ["盘点 Cycle count"]),
      form,
      this.error,
      el("h3", "sup-subtitle", {}, ["待审批 Counts waiting for approval"]),
      el("table", "sup-table", {}, [headOf(COUNT_COLUMNS), this.pendingBody]),
    );
  }

  async load(): Promise<void> {
    const [rows, lots, pending] = await Promise.all([
      getJson<BalanceRow[]>("/api/stock/balances"),
      getJson<LotRow[]>("/api/stock/lots"),
      getJson<CountRow[]>("/api/stock/counts?status=pending"),
    ]);
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
    this.items.replaceChildren(
      ...[...new Set(rows.map((row) => row.item))].map((item) => el("option", "", { value: item })),
    );
    this.locations.replaceChildren(
      ...[...new Set(rows.map((row) => row.location))].map((code) => el("option", "", { value: code })),
    );
    this.lotBody.replaceChildren(...lots.map((row) => lotRow(row)));
    if (lots.length === 0) this.lotBody.append(emptyRow(LOT_COLUMNS.length, "No stock"));
    this.pendingBody.replaceChildren(...pending.map((count) => this.pendingRow(count)));
    if (pending.length === 0) this.pendingBody.append(emptyRow(COUNT_COLUMNS.length, "No counts waiting"));
  }

  private currentUser(): string | null {
    const name = this.user.value.trim();
    if (name === "") {
      this.fail("enter your name first: counts and approvals are made by a named user");
      this.user.focus();
      return null;
    }
    storeUser(name);
    return name;
  }

  private fail(message: string): void {
    this.error.textContent = `请求被拒绝 Refused — ${message}`;
    this.error.hidden = false;
  }

  private clearError(): void {
    this.error.hidden = true;
    this.error.textContent = "";
  }

  private async count(): Promise<void> {
    const user = this.currentUser();
    if (user === null) return;
    this.clearError();
    const lot = this.lot.value.trim();
    const body = {
      item: this.item.value.trim(),
      location: this.location.value.trim(),
      counted: this.counted.value.trim(),
      ...(lot === "" ? {} : { lot }),
    };
    this.submit.disabled = true;
    try {
      const count = await postJsonAs<CountRow>("/api/stock/counts", body, user);
      this.result.textContent =
        count.status === "pending"
          ? `count ${count.id} waits for approval (value ${formatDecimal(count.value)})`
          : `count ${count.id} posted (difference ${formatDecimal(count.difference)})`;
      this.result.dataset.count = String(count.id);
      this.result.dataset.status = count.status;
      await this.load();
    } catch (error: unknown) {
      this.fail(describe(error));
    } finally {
      this.submit.disabled = false;
    }
  }

  private pendingRow(count: CountRow): HTMLTableRowElement {
    const id = `count-${count.id}`;
    const approve = el("button", "sup-button", { "data-testid": `${id}-approve` }, ["批准 Approve"]);
    const reject = el("button", "sup-button", { "data-testid": `${id}-reject` }, ["驳回 Reject"]);
    const decide = (action: "approve" | "reject"): void => {
      const user = this.currentUser();
      if (user === null) return;
      this.clearError();
      approve.disabled = reject.disabled = true;
      postJsonAs<CountRow>(`/api/stock/counts/${count.id}/${action}`, undefined, user)
        .then((decided) => {
          this.result.textContent = `count ${decided.id} ${decided.status} by ${decided.decided_by ?? user}`;
          this.result.dataset.count = String(decided.id);
          this.result.dataset.status = decided.status;
          return this.load();
        })
        .catch((error: unknown) => {
          approve.disabled = reject.disabled = false;
          this.fail(describe(error));
        });
    };
    approve.addEventListener("click", () => decide("approve"));
    reject.addEventListener("click", () => decide("reject"));
    const num = (text: string): HTMLElement => el("td", "num", { "data-value": text }, [formatDecimal(text)]);
    return el("tr", "", { "data-testid": id, "data-status": count.status }, [
      el("td", "", {}, [String(count.id)]),
      el("td", "", {}, [count.item]),
      el("td", "", {}, [count.location]),
      el("td", "", {}, [count.lot ?? "—"]),
      num(count.counted),
      num(count.book),
      num(count.difference),
      num(count.value),
      el("td", "", {}, [count.counted_by]),
      el("td", "", {}, [approve, " ", reject]),
    ]);
  }
}

function lotRow(row: LotRow): HTMLTableRowElement {
  const id = `lot-${row.item}-${row.location}-${row.lot ?? "none"}`;
  return el("tr", "", { "data-testid": id }, [
    el("td", "", {}, [row.item]),
    el("td", "", {}, [row.location]),
    el("td", "", {}, [row.lot ?? "(no lot)"]),
    el("td", "num", { "data-testid": `${id}-on-hand`, "data-value": row.on_hand }, [
      `${formatDecimal(row.on_hand)} ${row.uom}`,
    ]),
  ]);
}

const NUMERIC = new Set(["On hand", "Counted", "Book", "Difference", "Value"]);

function headOf(columns: string[]): HTMLTableSectionElement {
  return el("thead", "", {}, [
    el("tr", "", {}, columns.map((c) => el("th", NUMERIC.has(c) ? "num" : "", {}, [c]))),
  ]);
}

export function emptyRow(span: number, text: string): HTMLTableRowElement {
  return el("tr", "empty-row", {}, [el("td", "", { colspan: String(span) }, [text])]);
}

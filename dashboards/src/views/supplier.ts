// The supplier portal (#/supplier): a supplier sees its own purchase orders (sent and later; the
// cloud filters by the X-Taktline-Supplier header) and confirms or changes each line's date and
// quantity. The supplier code typed here is kept in localStorage and sent as that header: a
// STAND-IN for real login (anyone can type any code; it protects nothing). A refused
// confirmation is shown next to its line with the cloud's reason; a confirmed one reloads the list.

import { describe, getJsonAsSupplier, postJsonAsSupplier } from "../api";
import { formatDecimal } from "../decimal";
import { el } from "../dom";

export const SUPPLIER_ROUTE = "#/supplier";
const SUPPLIER_KEY = "taktline.supplier";

/** True when the hash names the supplier portal. */
export function isSupplierRoute(hash: string): boolean {
  return hash === SUPPLIER_ROUTE || hash.startsWith(`${SUPPLIER_ROUTE}/`);
}

interface SupplierPoLine {
  number: number;
  item: string;
  quantity: string;
  needed: string;
  confirmed_date: string | null;
  confirmed_quantity: string | null;
  received: string;
}

interface SupplierPurchaseOrder {
  number: string;
  supplier: string;
  currency: string;
  status: string;
  order_date: string;
  lines: SupplierPoLine[];
}

/** Statuses in which the cloud takes a (new) confirmation; later ones are shown read-only. */
const CONFIRMABLE = new Set(["sent", "confirmed", "changed", "partially-received"]);

const LINE_COLUMNS = [
  "Line",
  "Item",
  "Ordered",
  "Needed",
  "Confirmed date",
  "Confirmed qty",
  "Received",
  "确认 Confirm (date, quantity)",
];

function storedSupplier(): string {
  try {
    return window.localStorage.getItem(SUPPLIER_KEY) ?? "";
  } catch {
    return "";
  }
}

function storeSupplier(code: string): void {
  try {
    window.localStorage.setItem(SUPPLIER_KEY, code);
  } catch {
    // Private mode: the code lasts as long as the page.
  }
}

const orderPath = (number: string): string =>
  `/api/purchase-orders/${encodeURIComponent(number)}`;

export class SupplierPortalView {
  readonly element = el("section", "sup-panel", { "data-testid": "supplier-portal" });
  private readonly code = el("input", "sup-input", {
    "data-testid": "supplier-code",
    placeholder: "e.g. ACME",
    maxlength: "64",
    autocomplete: "off",
  });
  private readonly error = el("div", "sup-error", {
    "data-testid": "supplier-error",
    role: "alert",
    hidden: "",
  });
  private readonly result = el("div", "sup-result", { "data-testid": "supplier-result" });
  private readonly orders = el("div", "supplier-orders", { "data-testid": "supplier-orders" });
  private supplier = "";
  private loads = 0;

  constructor() {
    const show = el("button", "sup-button", { "data-testid": "supplier-show", type: "submit" }, [
      "查看订单 Show my orders",
    ]);
    const form = el("form", "sup-form", { "data-testid": "supplier-form" }, [
      el("label", "", {}, ["供应商代码 Supplier code ", this.code]),
      show,
    ]);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.supplier = this.code.value.trim();
      storeSupplier(this.supplier);
      this.result.textContent = "";
      void this.load();
    });
    this.element.append(
      el("h2", "panel-title", {}, ["供应商门户 ", el("span", "", {}, ["Supplier portal"])]),
      el("p", "sup-note supplier-auth-note", { "data-testid": "supplier-auth-note" }, [
        "Stand-in for a real login: the code is kept in this browser (localStorage) and sent as " +
          "the X-Taktline-Supplier header. Anyone can enter any code; it protects nothing.",
      ]),
      form,
      this.error,
      this.result,
      this.orders,
    );
    this.supplier = storedSupplier();
    this.code.value = this.supplier;
  }

  /** Read the supplier's orders again (nothing to read before a code is entered). */
  async load(): Promise<void> {
    this.error.hidden = true;
    this.error.textContent = "";
    const supplier = this.supplier;
    try {
      if (supplier === "") {
        this.orders.replaceChildren(
          el("p", "sup-note", { "data-testid": "supplier-empty" }, [
            "请输入供应商代码 Enter your supplier code to see your orders.",
          ]),
        );
        return;
      }
      const orders = await getJsonAsSupplier<SupplierPurchaseOrder[]>(
        "/api/purchase-orders",
        supplier,
      );
      if (supplier !== this.supplier) return; // another code was entered meanwhile
      this.orders.replaceChildren(...orders.map((order) => this.orderBlock(order, supplier)));
      if (orders.length === 0) {
        this.orders.append(
          el("p", "sup-note", { "data-testid": "supplier-empty" }, [
            `No purchase orders for ${supplier}.`,
          ]),
        );
      }
    } catch (failure) {
      if (supplier !== this.supplier) return;
      this.orders.replaceChildren();
      this.error.textContent = `请求被拒绝 Refused — ${describe(failure)}`;
      this.error.hidden = false;
      console.warn("taktline supplier:", failure);
    } finally {
      if (supplier === this.supplier) {
        // Which code the list on screen belongs to, and how many loads finished (for tests).
        this.loads += 1;
        this.orders.dataset.supplier = supplier;
        this.orders.dataset.loads = String(this.loads);
      }
    }
  }

  private orderBlock(order: SupplierPurchaseOrder, supplier: string): HTMLElement {
    const id = `spo-${order.number}`;
    const confirmable = CONFIRMABLE.has(order.status);
    const body = el(
      "tbody",
      "",
      {},
      order.lines.map((line) => this.lineRow(order, line, supplier, confirmable)),
    );
    return el(
      "div",
      "supplier-order",
      { "data-testid": id, "data-status": order.status, "data-supplier": order.supplier },
      [
        el("h3", "sup-subtitle", {}, [
          `${order.number} · order date ${order.order_date} · ${order.currency} · `,
          el("span", "", { "data-testid": `${id}-status` }, [order.status]),
        ]),
        el("table", "sup-table", {}, [
          el("thead", "", {}, [
            el("tr", "", {}, LINE_COLUMNS.map((label) => el("th", "", {}, [label]))),
          ]),
          body,
        ]),
      ],
    );
  }

  private lineRow(
    order: SupplierPurchaseOrder,
    line: SupplierPoLine,
    supplier: string,
    confirmable: boolean,
  ): HTMLTableRowElement {
    const id = `spo-${order.number}-line-${line.number}`;
    const cell = (key: string, text: string, value: string | null, numeric = false): HTMLElement =>
      el("td", numeric ? "num" : "", { "data-testid": `${id}-${key}`, "data-value": value ?? "" }, [
        text,
      ]);
    const action = el("td");
    if (confirmable) action.append(this.confirmForm(order, line, supplier, id));
    return el("tr", "", { "data-testid": id }, [
      el("td", "", {}, [String(line.number)]),
      cell("item", line.item, line.item),
      cell("quantity", formatDecimal(line.quantity), line.quantity, true),
      cell("needed", line.needed, line.needed),
      cell("confirmed-date", line.confirmed_date ?? "—", line.confirmed_date),
      cell("confirmed-quantity", formatDecimal(line.confirmed_quantity), line.confirmed_quantity, true),
      cell("received", formatDecimal(line.received), line.received, true),
      action,
    ]);
  }

  /** Date and quantity, prefilled with the current promise (the needed date and ordered
   * quantity until the first confirmation). The quantity goes to the cloud as typed: a decimal
   * string, never a float, and the cloud is the one that judges it. */
  private confirmForm(
    order: SupplierPurchaseOrder,
    line: SupplierPoLine,
    supplier: string,
    id: string,
  ): HTMLFormElement {
    const date = el("input", "sup-input", {
      type: "date",
      "data-testid": `${id}-date`,
      "aria-label": "confirmed date",
    });
    date.value = line.confirmed_date ?? line.needed;
    const quantity = el("input", "sup-input", {
      type: "text",
      inputmode: "decimal",
      size: "10",
      "data-testid": `${id}-qty`,
      "aria-label": "confirmed quantity",
    });
    quantity.value = line.confirmed_quantity ?? line.quantity;
    const submit = el("button", "sup-button sup-small", { type: "submit", "data-testid": `${id}-confirm` }, [
      "确认 Confirm",
    ]);
    const error = el("span", "sup-late", { "data-testid": `${id}-error`, role: "alert" });
    const form = el("form", "sup-form", {}, [date, quantity, submit, error]);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      error.textContent = "";
      const answer: { line: number; date?: string; quantity?: string } = { line: line.number };
      // A field left empty keeps the current promise (the cloud's rule).
      if (date.value !== "") answer.date = date.value;
      if (quantity.value.trim() !== "") answer.quantity = quantity.value.trim();
      submit.disabled = true;
      postJsonAsSupplier<SupplierPurchaseOrder>(
        `${orderPath(order.number)}/confirmation`,
        { lines: [answer] },
        supplier,
      )
        .then((confirmed) => {
          const now = confirmed.lines.find((l) => l.number === line.number);
          this.result.textContent =
            now === undefined
              ? `${order.number} confirmed`
              : `${order.number} line ${line.number} confirmed: ${now.confirmed_date ?? "—"} ` +
                `× ${formatDecimal(now.confirmed_quantity)} (${confirmed.status})`;
          return this.load();
        })
        .catch((failure: unknown) => {
          submit.disabled = false;
          error.textContent = describe(failure);
        });
    });
    return form;
  }
}

/** Build the portal into `root` and load the stored supplier's orders. */
export function mountSupplier(root: HTMLElement): void {
  const view = new SupplierPortalView();
  root.replaceChildren(view.element);
  void view.load().finally(() => {
    document.body.dataset.loaded = "supplier";
  });
}

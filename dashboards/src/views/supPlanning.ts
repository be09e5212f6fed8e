// Supervisor · Planning: run MRP, the latest run's planned orders (with the sales orders they
// serve through pegging) and action messages; Approve turns a planned order into a draft
// purchase order (buy) or a created work order (make). Live: a progress bar follows a run
// (mrp.progress), and a finished run (mrp.run.finished, whoever started it) reads the plan again.

import { ApiError, getJson, postJson } from "../api";
import { formatDecimal } from "../decimal";
import { el } from "../dom";
import type { MrpProgressData } from "../types";
import { emptyRow } from "./supStock";

export interface MrpRun {
  id: number;
  kind: string;
  started_at: string;
  plan_start: string;
  planned_orders: number;
  exceptions: number;
}

/** mrp.progress and mrp.run.finished (GET /api/mrp/runs/current has the same shape). */
export type MrpProgress = MrpProgressData;

const PHASES: Record<string, string> = {
  reading: "读取 Reading",
  planning: "计划 Planning",
  storing: "保存 Storing",
};

export interface PlannedOrder {
  id: string;
  item: string;
  kind: "make" | "buy";
  quantity: string;
  due_date: string;
  release_date: string;
  past_due: boolean;
}

export interface MrpException {
  kind: string;
  item: string;
  order: string;
  bucket_date: string;
  to_date: string | null;
  quantity: string;
}

interface Pegging {
  pegs: { demand: string; quantity: string; serves: { demand: string; kind: string | null }[] }[];
}

export interface Approval {
  run: number;
  document: "purchase_order" | "work_order";
  number: string;
  created: boolean;
}

const ORDER_COLUMNS = ["Planned order", "Kind", "Item", "Qty", "Release", "Due", "Serves", ""];
const EXCEPTION_COLUMNS = ["Message", "Item", "Order", "Now", "To", "Qty"];

/** What the page does around a view: show a failure, tell others that documents changed. */
export interface SupervisorHooks {
  report(error: unknown): void;
  documentsChanged(): void;
}

export class SupervisorPlanningView {
  readonly element = el("section", "sup-panel", { "data-testid": "sup-planning" });
  private readonly runButton = el("button", "sup-button", { "data-testid": "mrp-run" }, [
    "运行 MRP · Run MRP",
  ]);
  private readonly runInfo = el("span", "sup-note", { "data-testid": "mrp-run-info" });
  private readonly progressBar = el("progress", "sup-progress", {
    "data-testid": "mrp-progress-bar",
    max: "100",
    value: "0",
  });
  private readonly progressText = el("span", "sup-note", { "data-testid": "mrp-progress-text" });
  private readonly progress = el(
    "div",
    "sup-progress-box",
    { "data-testid": "mrp-progress", hidden: "" },
    [this.progressBar, this.progressText],
  );
  /** The job whose end was heard last: a late read of it must not show its bar again. */
  private finishedJob = 0;
  private readonly orders = el("tbody", "", { "data-testid": "planned-orders" });
  private readonly exceptions = el("tbody", "", { "data-testid": "mrp-exceptions" });

  constructor(private readonly hooks: SupervisorHooks) {
    this.runButton.addEventListener("click", () => void this.run());
    this.element.append(
      el("h2", "panel-title", {}, ["计划 ", el("span", "", {}, ["MRP planning"])]),
      el("div", "sup-toolbar", {}, [this.runButton, this.runInfo, this.progress]),
      el("h3", "sup-subtitle", {}, ["Planned orders"]),
      el("table", "sup-table", {}, [headOf(ORDER_COLUMNS), this.orders]),
      el("h3", "sup-subtitle", {}, ["Exception messages"]),
      el("table", "sup-table", {}, [headOf(EXCEPTION_COLUMNS), this.exceptions]),
    );
  }

  private async run(): Promise<void> {
    this.runButton.disabled = true;
    try {
      await postJson<MrpRun>("/api/mrp/runs");
      await this.load();
    } catch (error) {
      this.hooks.report(error);
    } finally {
      this.runButton.disabled = false;
    }
  }

  /** A live MRP event: the bar follows a running run; a finished one reads the plan again. */
  mrpEvent(type: "mrp.progress" | "mrp.run.finished", event: MrpProgress): void {
    const percent = Number(event.percent ?? "0");
    if (type === "mrp.progress" && event.status === "running") {
      if (event.job !== null && event.job === this.finishedJob) return;
      this.progress.hidden = false;
      this.progress.dataset.job = String(event.job);
      this.progress.dataset.phase = event.phase;
      this.progress.dataset.percent = String(percent);
      this.progressBar.value = percent;
      const counts = event.total ? ` ${event.done ?? 0}/${event.total}` : "";
      this.progressText.textContent = `${PHASES[event.phase] ?? event.phase} ${percent} %${counts}`;
      return;
    }
    if (type !== "mrp.run.finished") return;
    if (event.job !== null) this.finishedJob = event.job;
    this.progress.hidden = true;
    this.progress.dataset.phase = event.status;
    this.progressBar.value = 100;
    if (event.status === "failed") {
      this.runInfo.textContent = `MRP run failed: ${event.error ?? "unknown error"}`;
      return;
    }
    if (event.run !== null && this.runInfo.dataset.run !== String(event.run.id)) {
      void this.load().catch((error: unknown) => this.hooks.report(error));
    }
  }

  async load(): Promise<void> {
    void this.showCurrent();
    let run: MrpRun;
    try {
      run = await getJson<MrpRun>("/api/mrp/runs/latest");
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.runInfo.textContent = "No MRP run yet";
        this.orders.replaceChildren(emptyRow(ORDER_COLUMNS.length, "Run MRP to plan"));
        this.exceptions.replaceChildren();
        return;
      }
      throw error;
    }
    const [orders, messages] = await Promise.all([
      getJson<PlannedOrder[]>("/api/mrp/planned-orders"),
      getJson<MrpException[]>("/api/mrp/exceptions"),
    ]);
    const serves = await Promise.all(orders.map((order) => servedBy(order.id)));
    this.runInfo.textContent =
      `Run ${run.id} (${run.kind}) from ${run.plan_start}: ` +
      `${run.planned_orders} planned orders, ${run.exceptions} messages`;
    this.runInfo.dataset.run = String(run.id);
    this.orders.replaceChildren(...orders.map((order, i) => this.orderRow(order, serves[i] ?? [])));
    if (orders.length === 0) this.orders.append(emptyRow(ORDER_COLUMNS.length, "Nothing to order"));
    this.exceptions.replaceChildren(...messages.map(exceptionRow));
    if (messages.length === 0) {
      this.exceptions.append(emptyRow(EXCEPTION_COLUMNS.length, "No messages"));
    }
  }

  /** A run already going on when the tab is read shows its bar (live events move it on). */
  private async showCurrent(): Promise<void> {
    try {
      const current = await getJson<MrpProgress>("/api/mrp/runs/current");
      if (current.status === "running") this.mrpEvent("mrp.progress", current);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) this.hooks.report(error);
    }
  }

  private orderRow(order: PlannedOrder, serves: string[]): HTMLTableRowElement {
    const id = `plan-${order.id}`;
    const result = el("span", "sup-result", { "data-testid": `${id}-result` });
    const approve = el("button", "sup-button", { "data-testid": `${id}-approve` }, [
      order.kind === "buy" ? "批准 Approve → PO" : "批准 Approve → WO",
    ]);
    approve.addEventListener("click", () => {
      approve.disabled = true;
      const path = `/api/mrp/planned-orders/${order.id.split("/").map(encodeURIComponent).join("/")}/approve`;
      postJson<Approval>(path)
        .then((approval) => {
          result.textContent = `${approval.created ? "created" : "already"} ${approval.number}`;
          result.dataset.number = approval.number;
          this.hooks.documentsChanged();
        })
        .catch((error: unknown) => this.hooks.report(error))
        .finally(() => {
          approve.disabled = false;
        });
    });
    return el("tr", "", { "data-testid": id, "data-kind": order.kind }, [
      el("td", "", {}, [order.id]),
      el("td", "", { "data-testid": `${id}-kind` }, [order.kind]),
      el("td", "", {}, [order.item]),
      el("td", "num", { "data-testid": `${id}-quantity` }, [formatDecimal(order.quantity)]),
      el("td", order.past_due ? "sup-late" : "", {}, [
        order.release_date + (order.past_due ? " past due" : ""),
      ]),
      el("td", "", {}, [order.due_date]),
      el("td", "", { "data-testid": `${id}-serves` }, [serves.join(", ") || "—"]),
      el("td", "", {}, [approve, result]),
    ]);
  }
}

/** The sales order lines (or safety stock) a supply serves, through the run's pegging. */
async function servedBy(supply: string): Promise<string[]> {
  try {
    const pegging = await getJson<Pegging>(`/api/mrp/pegging?supply=${encodeURIComponent(supply)}`);
    const names = pegging.pegs.flatMap((peg) => peg.serves.map((s) => s.demand));
    return [...new Set(names)];
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return [];
    throw error;
  }
}

function exceptionRow(message: MrpException): HTMLTableRowElement {
  return el("tr", "", { "data-testid": `exc-${message.order}-${message.kind}` }, [
    el("td", "", {}, [message.kind]),
    el("td", "", {}, [message.item]),
    el("td", "", {}, [message.order]),
    el("td", "", {}, [message.bucket_date]),
    el("td", "", {}, [message.to_date ?? "—"]),
    el("td", "num", {}, [formatDecimal(message.quantity)]),
  ]);
}

export function headOf(columns: string[]): HTMLTableSectionElement {
  return el("thead", "", {}, [el("tr", "", {}, columns.map((c) => el("th", "", {}, [c])))]);
}

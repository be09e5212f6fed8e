// Read models of the cloud (GET /api/dashboard and the /ws/live events). Every quantity is a
// decimal STRING and every instant an ISO-8601 UTC string: the page never turns them into floats
// where exactness matters (see decimal.ts).

export type MachineState = "running" | "idle" | "down" | "unknown";

export interface Plant {
  code: string;
  name: string;
}

export interface MachineRow {
  code: string;
  name: string;
  line: string;
  state: MachineState | string;
  online: boolean;
  good_count: string | null;
  scrap_count: string | null;
  cycle_time_ms: string | null;
  temperature: string | null;
  updated_at: string | null;
}

export interface WorkOrderRow {
  number: string;
  item: string;
  line: string;
  status: string;
  quantity: string;
  good: string;
  scrap: string;
  progress: string;
  rate_per_hour: string | null;
  rate_basis: "measured" | "standard" | string | null;
  projected_completion: string | null;
  started_at: string | null;
  completed_at: string | null;
}

export interface StockRow {
  item: string;
  name: string;
  location: string;
  on_hand: string;
  uom: string;
}

export interface SalesOrderLineRow {
  order: string;
  customer: string;
  line: number;
  item: string;
  quantity: string;
  requested_date: string | null;
  promised_at: string | null;
  promise_reason: string | null;
  at_risk: boolean;
  previous_promised_at?: string | null;
  /** GET /api/sales-orders and sales_order.updated only (the big screen shows open lines). */
  status?: "open" | "cancelled" | "closed";
  cancelled_at?: string | null;
  /** promise.changed of a capable-to-promise promise: its reason chain. */
  steps?: PromiseStep[];
}

/** One link of a promise's reason chain (stock, queue, component, purchase, production, short). */
export interface PromiseStep {
  kind: string;
  reference: string;
  at: string | null;
  quantity: string;
  text: string;
}

/** One promise given for a line (GET /api/sales-orders/{order}/lines/{line}/promises). */
export interface PromiseRow {
  order: string;
  line: number;
  promised_at: string | null;
  reason: string;
  at: string;
  steps: PromiseStep[];
}

/** A sales order with its lines (POST /api/sales-orders, sales_order.updated). */
export interface SalesOrderRow {
  number: string;
  customer: string;
  created_at: string;
  status: "open" | "cancelled" | "closed";
  lines: SalesOrderLineRow[];
}

export interface NodeRow {
  edge_node: string;
  device: string | null;
  online: boolean;
  since: string | null;
}

export interface Dashboard {
  plant: Plant;
  generated_at: string;
  machines: MachineRow[];
  work_orders: WorkOrderRow[];
  stock: StockRow[];
  sales_orders: SalesOrderLineRow[];
}

/** One message of /ws/live: `{"type", "at", "data"}`. */
export type LiveEvent =
  | { type: "snapshot"; at: string; data: Dashboard }
  | { type: "machine.updated"; at: string; data: MachineRow }
  | { type: "work_order.updated"; at: string; data: WorkOrderRow }
  | { type: "stock.updated"; at: string; data: StockRow }
  | { type: "promise.changed"; at: string; data: SalesOrderLineRow }
  | { type: "sales_order.updated"; at: string; data: SalesOrderRow }
  | { type: "node.updated"; at: string; data: NodeRow }
  | { type: "posting"; at: string; data: Record<string, unknown> }
  | { type: "mrp.progress" | "mrp.run.finished"; at: string; data: MrpProgressData }
  | {
      type: "reservation.created" | "reservation.released" | "reservation.consumed";
      at: string;
      data: Record<string, unknown>;
    };

/** An MRP run's progress (mrp.progress, mrp.run.finished, GET /api/mrp/runs/current). */
export interface MrpProgressData {
  job: number | null;
  kind: string;
  status: "running" | "finished" | "failed";
  phase: string;
  done?: number;
  total?: number;
  percent?: string;
  run: { id: number; kind: string; planned_orders: number; exceptions: number } | null;
  error: string | null;
}

export const stockKey = (row: Pick<StockRow, "item" | "location">): string =>
  `${row.item}-${row.location}`;

export const promiseKey = (row: Pick<SalesOrderLineRow, "order" | "line">): string =>
  `${row.order}-${row.line}`;

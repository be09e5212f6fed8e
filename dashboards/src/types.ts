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
  | { type: "node.updated"; at: string; data: NodeRow }
  | { type: "posting"; at: string; data: Record<string, unknown> };

export const stockKey = (row: Pick<StockRow, "item" | "location">): string =>
  `${row.item}-${row.location}`;

export const promiseKey = (row: Pick<SalesOrderLineRow, "order" | "line">): string =>
  `${row.order}-${row.line}`;

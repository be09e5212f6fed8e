// Header: plant name, the lines on screen, gateway (edge node) chips, the clock and the live
// connection indicator.

import { el, setAttr, setText } from "../dom";
import type { ConnectionState } from "../live";
import { formatClock, formatLongDate } from "../time";
import type { NodeRow } from "../types";

const CONNECTION_LABELS: Record<ConnectionState, string> = {
  connecting: "连接中 CONNECTING",
  live: "实时 LIVE",
  reconnecting: "重连中 RECONNECTING",
};

export class HeaderView {
  private readonly gateways = new Map<string, HTMLElement>();

  constructor(
    private readonly plantName: HTMLElement,
    private readonly plantLines: HTMLElement,
    private readonly gatewayBox: HTMLElement,
    private readonly clockTime: HTMLElement,
    private readonly clockDate: HTMLElement,
    private readonly connection: HTMLElement,
    private readonly connectionLabel: HTMLElement,
  ) {}

  setPlant(name: string, lines: readonly string[]): void {
    setText(this.plantName, name);
    setText(this.plantLines, lines.join(" · "));
    document.title = `${name} · 生产大屏 · Taktline`;
  }

  setConnection(state: ConnectionState, retryInMs?: number): void {
    setAttr(this.connection, "data-state", state);
    setAttr(document.body, "data-conn", state);
    const seconds = retryInMs === undefined ? 0 : Math.max(1, Math.round(retryInMs / 1000));
    const retry = retryInMs === undefined ? "" : ` · ${seconds} s`;
    setText(this.connectionLabel, `${CONNECTION_LABELS[state]}${retry}`);
  }

  /** Gateway-level node status (node.updated with no device). */
  setNode(row: NodeRow): void {
    if (row.device !== null) return;
    let chip = this.gateways.get(row.edge_node);
    if (chip === undefined) {
      chip = el("span", "gateway", { "data-testid": `node-${row.edge_node}` }, [row.edge_node]);
      this.gateways.set(row.edge_node, chip);
      this.gatewayBox.append(chip);
    }
    setAttr(chip, "data-online", row.online ? "true" : "false");
    setAttr(chip, "title", row.online ? "网关在线 gateway online" : "网关离线 gateway offline");
  }

  tick(now: Date): void {
    setText(this.clockTime, formatClock(now));
    setText(this.clockDate, formatLongDate(now));
  }
}

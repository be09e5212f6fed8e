// One card per machine: state badge, good/scrap counters, cycle time, temperature, online flag.
// Cards are built once per machine code and then updated field by field.

import { formatDecimal } from "../decimal";
import { el, setAttr, setText, setTextFlash } from "../dom";
import { formatClock, parseInstant } from "../time";
import type { MachineRow } from "../types";

const STATE_LABELS: Record<string, string> = {
  running: "运行 RUNNING",
  idle: "待机 IDLE",
  down: "停机 DOWN",
  unknown: "未知 UNKNOWN",
};

/** The four states the screen colours; anything else shows as unknown. */
export function normaliseState(state: string | null | undefined): string {
  return state !== null && state !== undefined && state in STATE_LABELS ? state : "unknown";
}

interface Card {
  root: HTMLElement;
  name: HTMLElement;
  line: HTMLElement;
  state: HTMLElement;
  online: HTMLElement;
  good: HTMLElement;
  scrap: HTMLElement;
  cycle: HTMLElement;
  temperature: HTMLElement;
  updated: HTMLElement;
}

export class MachinesView {
  private readonly cards = new Map<string, Card>();

  constructor(private readonly container: HTMLElement) {}

  /** Replace the set of machines (snapshot): keeps existing cards, adds and removes the rest. */
  sync(rows: readonly MachineRow[]): void {
    const codes = new Set(rows.map((row) => row.code));
    for (const [code, card] of this.cards) {
      if (!codes.has(code)) {
        card.root.remove();
        this.cards.delete(code);
      }
    }
    rows.forEach((row, index) => {
      const card = this.update(row);
      // Keep plant.yaml's flow order (the snapshot's order) on screen.
      if (this.container.children[index] !== card.root) {
        this.container.insertBefore(card.root, this.container.children[index] ?? null);
      }
    });
    setAttr(this.container, "data-count", String(rows.length));
  }

  /** Apply one machine row (machine.updated). */
  update(row: MachineRow): Card {
    let card = this.cards.get(row.code);
    if (card === undefined) {
      card = this.build(row.code);
      this.cards.set(row.code, card);
      this.container.append(card.root);
      setAttr(this.container, "data-count", String(this.cards.size));
    }
    const state = normaliseState(row.state);
    setText(card.name, row.name);
    setText(card.line, row.line);
    setAttr(card.root, "data-state", state);
    setAttr(card.state, "data-state", state);
    setText(card.state, STATE_LABELS[state] ?? state);
    setAttr(card.root, "data-online", row.online ? "true" : "false");
    setText(card.online, row.online ? "在线 ONLINE" : "离线 OFFLINE");
    setTextFlash(card.good, formatDecimal(row.good_count));
    setTextFlash(card.scrap, formatDecimal(row.scrap_count));
    setText(card.cycle, formatDecimal(row.cycle_time_ms, { shift: -3, maxFraction: 2 }));
    setText(card.temperature, formatDecimal(row.temperature, { maxFraction: 1 }));
    const updated = parseInstant(row.updated_at);
    setText(card.updated, updated === null ? "" : `更新 ${formatClock(updated)}`);
    return card;
  }

  /** Online flag of one machine from a node.updated event about its device. */
  setOnline(code: string, online: boolean): void {
    const card = this.cards.get(code);
    if (card === undefined) return;
    setAttr(card.root, "data-online", online ? "true" : "false");
    setText(card.online, online ? "在线 ONLINE" : "离线 OFFLINE");
  }

  private build(code: string): Card {
    const id = `machine-${code}`;
    const name = el("span", "machine-name");
    const line = el("span", "machine-line");
    const state = el("span", "state-badge", { "data-testid": `${id}-state` });
    const online = el("span", "machine-online", { "data-testid": `${id}-online` });
    const good = el("span", "machine-good-value", { "data-testid": `${id}-good` });
    const scrap = el("span", "stat-value", { "data-testid": `${id}-scrap` });
    const cycle = el("span", "stat-value", { "data-testid": `${id}-cycle` });
    const temperature = el("span", "stat-value", { "data-testid": `${id}-temperature` });
    const updated = el("span", "machine-updated");
    const stat = (label: string, value: HTMLElement, unit: string): HTMLElement =>
      el("div", "stat", {}, [
        el("span", "stat-label", {}, [label]),
        el("span", "stat-figure", {}, [value, el("span", "unit", {}, [unit])]),
      ]);
    const root = el("article", "machine", { "data-testid": id, "data-code": code }, [
      el("div", "machine-head", {}, [
        el("div", "machine-title", {}, [
          el("span", "machine-code", {}, [code]),
          name,
        ]),
        state,
      ]),
      el("div", "machine-meta", {}, [line, online, updated]),
      el("div", "machine-good", {}, [
        el("span", "stat-label", {}, ["良品 Good"]),
        el("span", "machine-good-figure", {}, [good, el("span", "unit", {}, ["pcs"])]),
      ]),
      el("div", "machine-stats", {}, [
        stat("废品 Scrap", scrap, "pcs"),
        stat("节拍 Cycle", cycle, "s"),
        stat("温度 Temp", temperature, "°C"),
      ]),
    ]);
    return { root, name, line, state, online, good, scrap, cycle, temperature, updated };
  }
}

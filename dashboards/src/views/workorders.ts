// The running work order(s): progress gauge (ECharts) against the target quantity, good and scrap,
// the line's rate with its basis (measured / standard) and the projected completion.

import { COLORS, createChart, disposeChart, rem, type Chart } from "../charts";
import { formatDecimal, toNumber } from "../decimal";
import { el, setAttr, setText, setTextFlash } from "../dom";
import { formatDateTime, formatRemaining, parseInstant } from "../time";
import type { WorkOrderRow } from "../types";

/** How many work orders fit the panel at once. */
const MAX_SHOWN = 2;

const STATUS_LABELS: Record<string, string> = {
  created: "新建 CREATED",
  released: "已下达 RELEASED",
  dispatched: "已派工 DISPATCHED",
  running: "生产中 RUNNING",
  held: "暂停 HELD",
  completed: "已完工 COMPLETED",
  closed: "已关闭 CLOSED",
  aborted: "已中止 ABORTED",
};

const ACTIVE = new Set(["running", "held"]);
const UPCOMING = new Set(["created", "released", "dispatched"]);

const stamp = (text: string | null): number => parseInstant(text)?.getTime() ?? 0;

/** The work orders to show: running/held first; else the next upcoming; else the last finished. */
export function selectShown(rows: Iterable<WorkOrderRow>): WorkOrderRow[] {
  const all = [...rows];
  const active = all
    .filter((row) => ACTIVE.has(row.status))
    .sort((a, b) => stamp(a.started_at) - stamp(b.started_at) || a.number.localeCompare(b.number));
  if (active.length > 0) return active.slice(0, MAX_SHOWN);
  const upcoming = all.filter((row) => UPCOMING.has(row.status));
  upcoming.sort((a, b) => a.number.localeCompare(b.number));
  if (upcoming.length > 0) return upcoming.slice(0, 1);
  const finished = [...all].sort((a, b) => stamp(b.completed_at) - stamp(a.completed_at));
  return finished.slice(0, 1);
}

interface Block {
  root: HTMLElement;
  gaugeHost: HTMLElement;
  chart: Chart | null;
  item: HTMLElement;
  status: HTMLElement;
  progress: HTMLElement;
  good: HTMLElement;
  quantity: HTMLElement;
  scrap: HTMLElement;
  rate: HTMLElement;
  basis: HTMLElement;
  eta: HTMLElement;
  remaining: HTMLElement;
  row: WorkOrderRow | null;
  fit: ResizeObserver;
}

export class WorkOrdersView {
  private readonly rows = new Map<string, WorkOrderRow>();
  private readonly blocks = new Map<string, Block>();
  private readonly empty: HTMLElement;

  constructor(private readonly container: HTMLElement) {
    this.empty = el("div", "empty", { "data-testid": "wo-empty" }, [
      "无生产中工单 · No work order running",
    ]);
  }

  /** Replace all work orders (snapshot). */
  sync(rows: readonly WorkOrderRow[]): void {
    this.rows.clear();
    for (const row of rows) this.rows.set(row.number, row);
    this.render();
  }

  /** Apply one work order row (work_order.updated). */
  update(row: WorkOrderRow): void {
    this.rows.set(row.number, row);
    this.render();
  }

  /** Re-render the time-relative texts ("in 3 h 20 min"). */
  tick(now: Date): void {
    for (const block of this.blocks.values()) {
      if (block.row !== null) this.renderRemaining(block, block.row, now);
    }
  }

  private render(): void {
    const shown = selectShown(this.rows.values());
    const numbers = new Set(shown.map((row) => row.number));
    for (const [number, block] of this.blocks) {
      if (!numbers.has(number)) {
        if (block.chart !== null) disposeChart(block.chart);
        block.fit.disconnect();
        block.root.remove();
        this.blocks.delete(number);
      }
    }
    if (shown.length === 0) {
      if (!this.empty.isConnected) this.container.append(this.empty);
    } else {
      this.empty.remove();
    }
    setAttr(this.container, "data-count", String(shown.length));
    shown.forEach((row, index) => {
      let block = this.blocks.get(row.number);
      if (block === undefined) {
        block = this.build(row.number);
        this.blocks.set(row.number, block);
      }
      if (this.container.children[index] !== block.root) {
        this.container.insertBefore(block.root, this.container.children[index] ?? null);
      }
      if (block.chart === null) block.chart = this.createGauge(block.gaugeHost);
      this.fill(block, row);
    });
  }

  private fill(block: Block, row: WorkOrderRow): void {
    block.row = row;
    setAttr(block.root, "data-status", row.status);
    setText(block.item, `${row.item} · ${row.line}`);
    setAttr(block.status, "data-status", row.status);
    setText(block.status, STATUS_LABELS[row.status] ?? row.status.toUpperCase());
    const percent = formatDecimal(row.progress, { shift: 2, maxFraction: 1, minFraction: 1 });
    setText(block.progress, `${percent} %`);
    setTextFlash(block.good, formatDecimal(row.good));
    setText(block.quantity, formatDecimal(row.quantity));
    setTextFlash(block.scrap, formatDecimal(row.scrap));
    setText(block.rate, formatDecimal(row.rate_per_hour, { maxFraction: 0 }));
    const basis = row.rate_basis ?? "";
    setAttr(block.basis, "data-basis", basis);
    setText(
      block.basis,
      basis === "measured" ? "实测 measured" : basis === "standard" ? "标准 standard" : basis,
    );
    const eta = parseInstant(row.projected_completion);
    if (row.status === "completed" || row.status === "closed") {
      const done = parseInstant(row.completed_at);
      setText(block.eta, done === null ? "—" : formatDateTime(done));
    } else {
      setText(block.eta, eta === null ? "—" : formatDateTime(eta));
    }
    this.renderRemaining(block, row, new Date());

    const ratio = toNumber(row.progress) ?? 0;
    const value = Math.min(Math.max(ratio * 100, 0), 100);
    block.chart?.setOption({ series: [{ id: "progress", data: [{ value }] }] });
  }

  private renderRemaining(block: Block, row: WorkOrderRow, now: Date): void {
    const eta = parseInstant(row.projected_completion);
    const text = !ACTIVE.has(row.status) || eta === null ? "" : formatRemaining(eta, now);
    setText(block.remaining, text === "" ? "" : `剩余 ${text}`);
  }

  private createGauge(host: HTMLElement): Chart {
    const chart = createChart(host);
    const width = rem(1.1);
    chart.setOption({
      animationDurationUpdate: 800,
      series: [
        {
          id: "progress",
          type: "gauge",
          min: 0,
          max: 100,
          startAngle: 225,
          endAngle: -45,
          radius: "96%",
          center: ["50%", "54%"],
          pointer: { show: false },
          progress: {
            show: true,
            roundCap: true,
            width,
            itemStyle: {
              color: {
                type: "linear", x: 0, y: 0, x2: 1, y2: 0,
                colorStops: [
                  { offset: 0, color: "#0ea5e9" },
                  { offset: 1, color: COLORS.good },
                ],
              },
            },
          },
          axisLine: { roundCap: true, lineStyle: { width, color: [[1, COLORS.track]] } },
          axisTick: { show: false },
          splitLine: { show: false },
          axisLabel: { show: false },
          anchor: { show: false },
          title: { show: false },
          detail: { show: false },
          data: [{ value: 0 }],
        },
      ],
    });
    return chart;
  }

  private build(number: string): Block {
    const id = `wo-${number}`;
    const item = el("span", "wo-item");
    const status = el("span", "wo-status", { "data-testid": `${id}-status` });
    const progress = el("span", "wo-progress-value", { "data-testid": `${id}-progress` });
    const gaugeHost = el("div", "wo-gauge-chart");
    // The percentage sits inside the arc: size it to the gauge, capped at the design size.
    const fit = new ResizeObserver(([entry]) => {
      if (entry === undefined) return;
      const side = Math.min(entry.contentRect.width, entry.contentRect.height);
      progress.style.fontSize = `${Math.min(rem(3.4), Math.max(rem(1.2), side * 0.19))}px`;
    });
    fit.observe(gaugeHost);
    const good = el("span", "wo-good", { "data-testid": `${id}-good` });
    const quantity = el("span", "wo-quantity", { "data-testid": `${id}-quantity` });
    const scrap = el("span", "stat-value", { "data-testid": `${id}-scrap` });
    const rate = el("span", "stat-value", { "data-testid": `${id}-rate` });
    const basis = el("span", "basis-badge", { "data-testid": `${id}-rate-basis` });
    const eta = el("span", "stat-value", { "data-testid": `${id}-eta` });
    const remaining = el("span", "wo-remaining");
    const row = (label: string, ...children: (Node | string)[]): HTMLElement =>
      el("div", "wo-row", {}, [el("span", "stat-label", {}, [label]),
        el("span", "wo-row-value", {}, children)]);
    const root = el("article", "wo", { "data-testid": id, "data-number": number }, [
      el("div", "wo-head", {}, [
        el("div", "wo-title", {}, [el("span", "wo-number", {}, [number]), item]),
        status,
      ]),
      el("div", "wo-body", {}, [
        el("div", "wo-gauge", {}, [
          gaugeHost,
          el("div", "wo-gauge-center", {}, [
            progress,
            el("span", "wo-gauge-label", {}, ["完成率 Progress"]),
          ]),
        ]),
        el("div", "wo-stats", {}, [
          el("div", "wo-count", {}, [
            el("span", "stat-label", {}, ["良品 / 计划 Good / Target"]),
            el("span", "wo-count-figure", {}, [good, el("span", "wo-sep", {}, ["/"]), quantity]),
          ]),
          row("废品 Scrap", scrap, el("span", "unit", {}, ["pcs"])),
          row("速率 Rate", rate, el("span", "unit", {}, ["/h"]), basis),
          row("预计完工 ETA", eta, remaining),
        ]),
      ]),
    ]);
    return {
      root, gaugeHost, chart: null, item, status, progress, good, quantity, scrap, rate, basis,
      eta, remaining, row: null, fit,
    };
  }
}

// Live trend of each line's output: the good counter of the line's last machine over the last
// minutes, fed by machine.updated events (and snapshots). The history lives in the page only: a
// reload starts a fresh trend, which is all a wall screen needs.

import { COLORS, createChart, fontFamily, rem, type Chart } from "../charts";
import { formatDecimal, toNumber } from "../decimal";
import { el, setText } from "../dom";
import type { MachineRow } from "../types";

/** How much history the chart shows. */
export const WINDOW_MS = 15 * 60_000;
/** Bound on points kept per line (drop-oldest), whatever the event rate. */
const MAX_POINTS = 5_000;
/** Shortest time span the axis shows. */
const MIN_SPAN_MS = 2 * 60_000;
const SERIES_COLORS = [COLORS.accent, COLORS.good, "#a78bfa", COLORS.idle];

type Point = [number, number];
interface AxisExtent {
  min: number;
  max: number;
}

const headroom = (min: number, max: number): number => Math.max(5, (max - min) * 0.1);
const roundTo5 = (value: number, direction: 1 | -1): number =>
  (direction > 0 ? Math.ceil(value / 5) : Math.floor(value / 5)) * 5;

interface LineTrend {
  line: string;
  machine: string;
  machineName: string;
  points: Point[];
}

/** The last machine of each line, in the snapshot's (plant.yaml flow) order. */
export function outputMachines(rows: readonly MachineRow[]): Map<string, MachineRow> {
  const last = new Map<string, MachineRow>();
  for (const row of rows) last.set(row.line, row);
  return last;
}

/** Count at or before `at` (step interpolation); the first point if none is that old. */
export function countAt(points: readonly Point[], at: number): number | null {
  let found: number | null = null;
  for (const [time, value] of points) {
    if (time <= at) found = value;
    else break;
  }
  return found ?? points[0]?.[1] ?? null;
}

export class TrendView {
  private readonly lines = new Map<string, LineTrend>();
  private readonly byMachine = new Map<string, LineTrend>();
  private chart: Chart | null = null;
  private readonly lastMinute = el("span", "kpi-value", { "data-testid": "trend-last-minute" });
  private readonly pace = el("span", "kpi-value", { "data-testid": "trend-pace" });

  constructor(
    private readonly host: HTMLElement,
    private readonly note: HTMLElement,
    kpis: HTMLElement,
  ) {
    kpis.append(
      el("div", "kpi", {}, [
        el("span", "stat-label", {}, ["近1分钟 Last minute"]),
        el("span", "kpi-figure", {}, [this.lastMinute, el("span", "unit", {}, ["pcs"])]),
      ]),
      el("div", "kpi", {}, [
        el("span", "stat-label", {}, ["实测节奏 Pace"]),
        el("span", "kpi-figure", {}, [this.pace, el("span", "unit", {}, ["pcs/h"])]),
      ]),
    );
  }

  /** Learn the lines' output machines from a snapshot and record their current counts. */
  sync(rows: readonly MachineRow[], now: number): void {
    const outputs = outputMachines(rows);
    this.byMachine.clear();
    for (const [line, machine] of outputs) {
      let trend = this.lines.get(line);
      if (trend === undefined || trend.machine !== machine.code) {
        trend = { line, machine: machine.code, machineName: machine.name, points: [] };
        this.lines.set(line, trend);
      }
      trend.machineName = machine.name;
      this.byMachine.set(machine.code, trend);
    }
    for (const line of [...this.lines.keys()]) {
      if (!outputs.has(line)) this.lines.delete(line);
    }
    for (const row of outputs.values()) this.record(row, now);
    const notes = [...this.lines.values()].map((t) => `${t.machine} ${t.machineName}`);
    setText(this.note, notes.length === 0 ? "" : `${notes.join(" · ")} · 15 min`);
    this.render(now);
  }

  /** Record a machine.updated row if it is a line's output machine. */
  update(row: MachineRow, now: number): void {
    if (!this.byMachine.has(row.code)) return;
    this.record(row, now);
    this.render(now);
  }

  /** Slide the window (called every second). */
  tick(now: number): void {
    this.render(now);
  }

  private record(row: MachineRow, now: number): void {
    const trend = this.byMachine.get(row.code);
    const value = toNumber(row.good_count);
    if (trend === undefined || value === null) return;
    // Time of receipt, not the row's updated_at: the window is measured by this screen's clock,
    // and a TV's clock that is off by minutes must not push the curve out of its own window.
    const at = now;
    const last = trend.points[trend.points.length - 1];
    if (last !== undefined && last[1] === value) return;
    if (last !== undefined && at < last[0]) return;
    trend.points.push([at, value]);
    if (trend.points.length > MAX_POINTS) trend.points.splice(0, trend.points.length - MAX_POINTS);
  }

  private render(now: number): void {
    const start = now - WINDOW_MS;
    // Until the page has seen a full window, the axis starts near the first point (at least
    // MIN_SPAN_MS back) so a fresh screen shows a curve, not a sliver at the right edge.
    const firstSeen = Math.min(
      ...[...this.lines.values()].map((trend) => trend.points[0]?.[0] ?? now),
    );
    const axisStart = Math.max(start, Math.min(firstSeen, now - MIN_SPAN_MS));
    const series = [...this.lines.values()].map((trend, index) => {
      // Drop what left the window, but keep one point before it to anchor the step line.
      const firstInside = trend.points.findIndex(([time]) => time >= start);
      const cut = firstInside === -1 ? trend.points.length - 1 : firstInside - 1;
      if (cut > 0) trend.points.splice(0, cut);
      const data = trend.points.map(([time, value]): Point => [Math.max(time, axisStart), value]);
      const last = data[data.length - 1];
      if (last !== undefined && last[0] < now) data.push([now, last[1]]);
      return this.seriesOption(trend, index, data);
    });
    this.renderKpis(now);
    if (this.chart === null) this.chart = this.createTrendChart();
    this.chart.setOption(
      { xAxis: { min: axisStart, max: now }, series },
      { replaceMerge: ["series"], lazyUpdate: true },
    );
  }

  private renderKpis(now: number): void {
    const trend = this.lines.values().next().value;
    if (trend === undefined || trend.points.length === 0) {
      setText(this.lastMinute, "—");
      setText(this.pace, "—");
      return;
    }
    const points = trend.points;
    const latest = points[points.length - 1]?.[1] ?? 0;
    const minuteAgo = countAt(points, now - 60_000) ?? latest;
    setText(this.lastMinute, formatDecimal(String(Math.max(latest - minuteAgo, 0))));
    const first = points[0];
    const span = first === undefined ? 0 : now - Math.max(first[0], now - WINDOW_MS);
    if (first === undefined || span < 60_000) {
      setText(this.pace, "—");
      return;
    }
    const made = latest - (countAt(points, now - WINDOW_MS) ?? first[1]);
    setText(this.pace, formatDecimal(String(Math.max(Math.round((made * 3_600_000) / span), 0))));
  }

  private seriesOption(trend: LineTrend, index: number, data: Point[]): object {
    const color = SERIES_COLORS[index % SERIES_COLORS.length] ?? COLORS.accent;
    return {
      id: `line-${trend.line}`,
      name: `${trend.line} · ${trend.machine}`,
      type: "line",
      step: "end",
      showSymbol: false,
      lineStyle: { width: 3, color },
      itemStyle: { color },
      areaStyle: {
        color: {
          type: "linear", x: 0, y: 0, x2: 0, y2: 1,
          colorStops: [{ offset: 0, color: `${color}55` }, { offset: 1, color: `${color}00` }],
        },
      },
      data,
    };
  }

  private createTrendChart(): Chart {
    const chart = createChart(this.host);
    const size = rem(0.85);
    const axisLabel = { color: COLORS.muted, fontSize: size, fontFamily: fontFamily() };
    chart.setOption({
      animation: false,
      grid: { left: rem(0.5), right: rem(1), top: rem(1), bottom: rem(0.4), containLabel: true },
      xAxis: {
        type: "time",
        splitNumber: 5,
        minInterval: 60_000,
        axisLine: { lineStyle: { color: COLORS.grid } },
        splitLine: { show: false },
        axisLabel: { ...axisLabel, formatter: "{HH}:{mm}" },
      },
      yAxis: {
        type: "value",
        // A few counts of headroom, on multiples of 5, so one point or a flat line still sits
        // mid-chart instead of ECharts' wide default range.
        min: (axis: AxisExtent): number =>
          Math.max(0, roundTo5(axis.min - headroom(axis.min, axis.max), -1)),
        max: (axis: AxisExtent): number => roundTo5(axis.max + headroom(axis.min, axis.max), 1),
        minInterval: 1,
        splitNumber: 3,
        axisLabel: {
          ...axisLabel,
          formatter: (value: number): string => formatDecimal(String(Math.round(value))),
        },
        splitLine: { lineStyle: { color: COLORS.grid, type: "dashed" } },
      },
      series: [],
    });
    return chart;
  }
}

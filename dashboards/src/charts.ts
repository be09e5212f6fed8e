// The only importer of ECharts: registers just the parts the big screen draws (gauge, bar, line on
// a canvas) so the bundle stays small, and owns the shared dark-theme colours.

import { BarChart, GaugeChart, LineChart } from "echarts/charts";
import { GridComponent } from "echarts/components";
import * as echarts from "echarts/core";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([GaugeChart, BarChart, LineChart, GridComponent, CanvasRenderer]);

export type Chart = echarts.ECharts;
export type ChartOption = echarts.EChartsCoreOption;

export const COLORS = {
  text: "#e6edf7",
  muted: "#8b9bb8",
  grid: "#22304d",
  track: "#1b2640",
  accent: "#38bdf8",
  good: "#22c55e",
  idle: "#f59e0b",
  down: "#ef4444",
  unknown: "#64748b",
} as const;

const observers = new Map<Chart, ResizeObserver>();

/** An ECharts instance on `element`, resized with its container. */
export function createChart(element: HTMLElement): Chart {
  const chart = echarts.init(element, null, { renderer: "canvas" });
  const observer = new ResizeObserver(() => chart.resize());
  observer.observe(element);
  observers.set(chart, observer);
  return chart;
}

/** Dispose a chart made by createChart (its element is leaving the page). */
export function disposeChart(chart: Chart): void {
  observers.get(chart)?.disconnect();
  observers.delete(chart);
  chart.dispose();
}

/** Font sizes in the charts follow the page's root size so the TV scaling applies to them too. */
export function rem(value: number): number {
  const root = Number.parseFloat(getComputedStyle(document.documentElement).fontSize);
  return Math.round((Number.isFinite(root) ? root : 16) * value);
}

/** The page's font stack (system fonts only: nothing is fetched at run time). */
export function fontFamily(): string {
  return getComputedStyle(document.body).fontFamily;
}

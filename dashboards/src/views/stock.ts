// Component stock: an ECharts horizontal bar of on-hand per item at its location, between a DOM
// label column and a DOM value column (exact figures, test ids). The chart's grid has no margins
// and one category band per row, so band centres line up with the equal-height DOM rows.

import { COLORS, createChart, type Chart } from "../charts";
import { formatDecimal, subtractDecimals, toNumber } from "../decimal";
import { el, flash, setAttr, setText, setTextFlash } from "../dom";
import { stockKey, type StockRow } from "../types";

interface Row {
  label: HTMLElement;
  value: HTMLElement;
  figure: HTMLElement;
  uom: HTMLElement;
  delta: HTMLElement;
  name: HTMLElement;
  data: StockRow;
}

export class StockView {
  private readonly rows = new Map<string, Row>();
  private order: string[] = [];
  private chart: Chart | null = null;

  constructor(
    private readonly labels: HTMLElement,
    private readonly values: HTMLElement,
    private readonly chartHost: HTMLElement,
  ) {}

  /** Replace all stock rows (snapshot). */
  sync(rows: readonly StockRow[]): void {
    const keys = rows.map(stockKey);
    const keep = new Set(keys);
    for (const [key, row] of this.rows) {
      if (!keep.has(key)) {
        row.label.remove();
        row.value.remove();
        this.rows.delete(key);
      }
    }
    this.order = keys;
    for (const data of rows) this.apply(data);
    this.layout();
  }

  /** Apply one stock row (stock.updated); a new item/location is appended. */
  update(data: StockRow): void {
    const key = stockKey(data);
    if (!this.order.includes(key)) this.order.push(key);
    const isNew = !this.rows.has(key);
    this.apply(data);
    if (isNew) this.layout();
    else this.draw();
  }

  private apply(data: StockRow): void {
    const key = stockKey(data);
    let row = this.rows.get(key);
    if (row === undefined) {
      row = this.build(data);
      this.rows.set(key, row);
    } else {
      const delta = subtractDecimals(data.on_hand, row.data.on_hand);
      if (delta !== null && delta !== "0") {
        const up = !delta.startsWith("-");
        setAttr(row.delta, "data-direction", up ? "up" : "down");
        setText(row.delta, `${up ? "▲ +" : "▼ "}${formatDecimal(delta.replace("-", ""))}`);
        flash(row.delta);
      }
    }
    row.data = data;
    setText(row.name, data.name);
    setTextFlash(row.figure, formatDecimal(data.on_hand));
    setText(row.uom, data.uom);
    setAttr(row.value, "data-negative", data.on_hand.trim().startsWith("-") ? "true" : "false");
  }

  /** Put DOM rows in order and redraw the bars. */
  private layout(): void {
    this.order = this.order.filter((key) => this.rows.has(key));
    const container = this.labels.parentElement;
    const many = this.order.length > 6;
    if (container !== null) setAttr(container, "data-count", many ? "many" : "few");
    this.order.forEach((key, index) => {
      const row = this.rows.get(key);
      if (row === undefined) return;
      if (this.labels.children[index] !== row.label) {
        this.labels.insertBefore(row.label, this.labels.children[index] ?? null);
      }
      if (this.values.children[index] !== row.value) {
        this.values.insertBefore(row.value, this.values.children[index] ?? null);
      }
    });
    this.draw();
  }

  private draw(): void {
    if (this.chart === null) {
      this.chart = createChart(this.chartHost);
      this.chart.setOption({
        animationDurationUpdate: 600,
        grid: { left: 0, right: 0, top: 0, bottom: 0, containLabel: false },
        xAxis: { type: "value", min: 0, show: false },
        yAxis: { type: "category", inverse: true, show: false, data: [] },
        series: [{
          id: "on-hand",
          type: "bar",
          barWidth: "46%",
          showBackground: true,
          backgroundStyle: { color: COLORS.track, borderRadius: 6 },
          itemStyle: {
            borderRadius: 6,
            color: {
              type: "linear", x: 0, y: 0, x2: 1, y2: 0,
              colorStops: [{ offset: 0, color: "#0369a1" }, { offset: 1, color: COLORS.accent }],
            },
          },
          data: [],
        }],
      });
    }
    const rows = this.order.flatMap((key) => {
      const row = this.rows.get(key);
      return row === undefined ? [] : [row.data];
    });
    this.chart.setOption({
      yAxis: { data: rows.map(stockKey) },
      series: [{
        id: "on-hand",
        data: rows.map((row) => ({ value: Math.max(toNumber(row.on_hand) ?? 0, 0) })),
      }],
    });
  }

  private build(data: StockRow): Row {
    const testid = `stock-${stockKey(data)}`;
    const name = el("span", "stock-name");
    const label = el("div", "stock-label", { "data-testid": `${testid}-label` }, [
      el("span", "stock-item", {}, [data.item]),
      el("span", "stock-sub", {}, [name, el("span", "stock-location", {}, [data.location])]),
    ]);
    const figure = el("span", "stock-figure", { "data-testid": `${testid}-on-hand` });
    const uom = el("span", "unit");
    const delta = el("span", "stock-delta");
    const value = el("div", "stock-value", {
      "data-testid": testid, "data-item": data.item, "data-location": data.location,
    }, [delta, el("span", "stock-figure-line", {}, [figure, uom])]);
    return { label, value, figure, uom, delta, name, data };
  }
}

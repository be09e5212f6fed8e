// Supervisor · Forecast: pick an item; its sales history and the statistical forecast per bucket
// (less what booked orders consume: what MRP plans), drawn as a small SVG chart, and the backtest
// against the naive forecast (MAE of both, relative MAE, MASE) from GET /api/items/{item}/forecast.

import { ApiError, getJson } from "../api";
import { formatDecimal, toNumber } from "../decimal";
import { el } from "../dom";
import { headOf } from "./supPlanning";
import { emptyRow } from "./supStock";

interface Item {
  sku: string;
  name: string;
  kind: string;
}

interface Backtest {
  method: string;
  baseline: string;
  origins: number;
  lead: number;
  model_mae: string;
  baseline_mae: string;
  relative_mae: string | null;
  mase: string | null;
}

export interface ItemForecast {
  item: string;
  bucket: "day" | "week";
  as_of: string;
  method: string;
  season_length: number;
  history: { start: string; quantity: string }[];
  forecast: { start: string; forecast: string; orders: string; remaining: string }[];
  backtest: Backtest;
}

const COLUMNS = ["Bucket", "Forecast", "Booked orders", "Remaining (to MRP)"];
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 900;
const HEIGHT = 240;
const PAD = { left: 56, right: 12, top: 12, bottom: 28 };

export class SupervisorForecastView {
  readonly element = el("section", "sup-panel", { "data-testid": "sup-forecast" });
  private readonly item = el("select", "sup-input", { "data-testid": "forecast-item" });
  private readonly bucket = el("select", "sup-input", { "data-testid": "forecast-bucket" }, [
    el("option", "", { value: "week" }, ["week"]),
    el("option", "", { value: "day" }, ["day"]),
  ]);
  private readonly horizon = el("input", "sup-input", {
    "data-testid": "forecast-horizon",
    type: "number",
    min: "1",
    max: "366",
    value: "12",
    size: "4",
  });
  private readonly note = el("div", "sup-note", { "data-testid": "forecast-note" });
  private readonly figures = el("dl", "forecast-figures", { "data-testid": "forecast-backtest" });
  private readonly chart = el("div", "forecast-chart", { "data-testid": "forecast-chart" });
  private readonly body = el("tbody", "", { "data-testid": "forecast-buckets" });
  private loaded = false;

  constructor(report: (error: unknown) => void) {
    const show = el("button", "sup-button", { "data-testid": "forecast-show", type: "submit" }, ["显示 Show"]);
    const form = el("form", "sup-form", {}, [
      el("label", "", {}, ["Item ", this.item]),
      el("label", "", {}, ["Bucket ", this.bucket]),
      el("label", "", {}, ["Horizon ", this.horizon]),
      show,
    ]);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.show().catch(report);
    });
    this.item.addEventListener("change", () => void this.show().catch(report));
    this.element.append(
      el("h2", "panel-title", {}, ["预测 ", el("span", "", {}, ["Demand forecast"])]),
      form,
      this.note,
      this.figures,
      this.chart,
      el("h3", "sup-subtitle", {}, ["Forecast per bucket"]),
      el("table", "sup-table forecast-table", {}, [headOf(COLUMNS), this.body]),
    );
  }

  async load(): Promise<void> {
    if (!this.loaded) {
      const items = await getJson<Item[]>("/api/items");
      const finished = items.filter((i) => i.kind === "finished");
      const shown = [...finished, ...items.filter((i) => i.kind !== "finished")];
      this.item.replaceChildren(
        ...shown.map((i) => el("option", "", { value: i.sku }, [`${i.sku} · ${i.name}`])),
      );
      this.loaded = true;
    }
    await this.show();
  }

  private async show(): Promise<void> {
    const item = this.item.value;
    if (item === "") return;
    const query = `bucket=${this.bucket.value}&horizon=${encodeURIComponent(this.horizon.value || "12")}`;
    this.element.dataset.item = item;
    let forecast: ItemForecast;
    try {
      forecast = await getJson<ItemForecast>(`/api/items/${encodeURIComponent(item)}/forecast?${query}`);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 409 || error.status === 404)) {
        // Too little history is an answer, not a failure: say it where the figures would be.
        this.note.textContent = error.detail;
        this.note.dataset.state = "none";
        this.figures.replaceChildren();
        this.chart.replaceChildren();
        this.body.replaceChildren(emptyRow(COLUMNS.length, "No forecast"));
        return;
      }
      throw error;
    }
    this.render(forecast);
  }

  private render(forecast: ItemForecast): void {
    const test = forecast.backtest;
    const relative = toNumber(test.relative_mae);
    this.note.dataset.state = "ok";
    this.note.textContent =
      `${forecast.item}: ${forecast.method} (season ${forecast.season_length}), ` +
      `${forecast.history.length} ${forecast.bucket}s of history, as of ${forecast.as_of}`;
    const figure = (label: string, key: string, value: string | null, text?: string): HTMLElement[] => [
      el("dt", "", {}, [label]),
      el("dd", "", { "data-testid": `forecast-${key}`, "data-value": value ?? "" }, [
        text ?? (value === null ? "—" : formatDecimal(value, { maxFraction: 3 })),
      ]),
    ];
    const verdict =
      relative === null ? "no baseline error" : relative < 1 ? "beats naive" : "no better than naive";
    this.figures.replaceChildren(
      ...figure("Method", "method", test.method, test.method),
      ...figure(`MAE (${test.origins} origins, lead ${test.lead})`, "mae", test.model_mae),
      ...figure(`MAE ${test.baseline}`, "baseline-mae", test.baseline_mae),
      ...figure("Relative MAE", "relative-mae", test.relative_mae),
      ...figure("MASE", "mase", test.mase),
      ...figure("vs naive", "verdict", verdict, verdict),
    );
    this.chart.replaceChildren(
      drawChart(forecast),
      el("div", "sup-note forecast-legend", {}, [
        el("span", "legend-history", {}, ["━ 历史 history"]),
        el("span", "legend-forecast", {}, ["┅ 预测 forecast"]),
        el("span", "legend-orders", {}, ["▮ booked orders"]),
      ]),
    );
    this.body.replaceChildren(
      ...forecast.forecast.map((row) =>
        el("tr", "", { "data-testid": `forecast-bucket-${row.start}` }, [
          el("td", "", {}, [row.start]),
          el("td", "num", { "data-value": row.forecast }, [formatDecimal(row.forecast)]),
          el("td", "num", { "data-value": row.orders }, [formatDecimal(row.orders)]),
          el("td", "num", { "data-value": row.remaining }, [formatDecimal(row.remaining)]),
        ]),
      ),
    );
    if (forecast.forecast.length === 0) this.body.append(emptyRow(COLUMNS.length, "No buckets"));
  }
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string>,
  children: (Node | string)[] = [],
): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) element.append(child);
  return element;
}

/** History (solid), forecast (dashed) and booked orders (bars) over one time axis. */
function drawChart(forecast: ItemForecast): SVGSVGElement {
  const history = forecast.history.map((h) => ({ start: h.start, value: toNumber(h.quantity) ?? 0 }));
  const ahead = forecast.forecast.map((f) => ({
    start: f.start,
    value: toNumber(f.forecast) ?? 0,
    orders: toNumber(f.orders) ?? 0,
  }));
  const count = history.length + ahead.length;
  const top = Math.max(1, ...history.map((h) => h.value), ...ahead.map((f) => Math.max(f.value, f.orders)));
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const x = (index: number): number => PAD.left + (count <= 1 ? 0 : (index * plotWidth) / (count - 1));
  const y = (value: number): number => PAD.top + plotHeight - (value / top) * plotHeight;
  const points = (values: { value: number }[], offset: number): string =>
    values.map((v, i) => `${x(i + offset).toFixed(1)},${y(v.value).toFixed(1)}`).join(" ");
  const barWidth = Math.max(2, plotWidth / Math.max(count, 1) / 2);
  const bars = ahead
    .filter((f) => f.orders > 0)
    .map((f) =>
      svg("rect", {
        class: "fc-orders",
        x: (x(history.length + ahead.indexOf(f)) - barWidth / 2).toFixed(1),
        y: y(f.orders).toFixed(1),
        width: barWidth.toFixed(1),
        height: (PAD.top + plotHeight - y(f.orders)).toFixed(1),
      }),
    );
  // The forecast line starts from the last history point so the two read as one series.
  const joined = history.length > 0 ? [history[history.length - 1]!, ...ahead] : ahead;
  const first = history[0]?.start ?? ahead[0]?.start ?? "";
  const last = ahead[ahead.length - 1]?.start ?? history[history.length - 1]?.start ?? "";
  return svg(
    "svg",
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      class: "forecast-svg",
      role: "img",
      "aria-label": `${forecast.item}: history and forecast`,
    },
    [
      svg("line", { class: "fc-axis", x1: String(PAD.left), y1: String(y(0)), x2: String(WIDTH - PAD.right), y2: String(y(0)) }),
      svg("line", { class: "fc-now", x1: x(history.length - 0.5).toFixed(1), y1: String(PAD.top), x2: x(history.length - 0.5).toFixed(1), y2: String(y(0)) }),
      svg("text", { class: "fc-label", x: String(PAD.left - 6), y: String(PAD.top + 10), "text-anchor": "end" }, [formatDecimal(String(top))]),
      svg("text", { class: "fc-label", x: String(PAD.left - 6), y: String(y(0)), "text-anchor": "end" }, ["0"]),
      svg("text", { class: "fc-label", x: String(PAD.left), y: String(HEIGHT - 8) }, [first]),
      svg("text", { class: "fc-label", x: String(WIDTH - PAD.right), y: String(HEIGHT - 8), "text-anchor": "end" }, [last]),
      ...bars,
      svg("polyline", {
        class: "fc-history",
        "data-testid": "forecast-history-line",
        "data-points": String(history.length),
        points: points(history, 0),
      }),
      svg("polyline", {
        class: "fc-forecast",
        "data-testid": "forecast-forecast-line",
        "data-points": String(ahead.length),
        points: points(joined, history.length > 0 ? history.length - 1 : 0),
      }),
    ],
  );
}

// The chart of a result: for each metric in result.chart, one bar per system,
// the metrics side by side with their own y-scales. Rendered in Node with
// vega-lite → vega → SVG (no canvas: text widths are estimated).

import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

import { conditionPairs, formatNumber } from './report.js';
import type { BenchResult } from './result.js';

/** Total width the chart is laid out for, in px. */
const CHART_WIDTH = 700;
const PALETTE = ['#4c78a8', '#f58518', '#54a24b', '#e45756', '#72b7b2', '#b279a2', '#eeca3b', '#9d755d', '#ff9da6', '#bab0ac'];

interface Row {
  system: string;
  value: number;
  label: string;
}

/** 12,345 → "12.3k", 1,234,567 → "1.23M"; smaller figures as formatNumber. */
function compactNumber(v: number): string {
  const abs = Math.abs(v);
  const [div, unit] = abs >= 1e9 ? [1e9, 'G'] : abs >= 1e6 ? [1e6, 'M'] : abs >= 1e3 ? [1e3, 'k'] : [1, ''];
  if (div === 1) return formatNumber(v);
  const x = v / div;
  const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2;
  return `${Number(x.toFixed(digits))}${unit}`;
}

/** The figure written over a bar: in full when it fits the bar's band, else compact. */
function barLabel(v: number, band: number, fontSize: number): string {
  const full = formatNumber(v);
  return full.length * fontSize * 0.6 <= band - 2 ? full : compactNumber(v);
}

/** Round tick values from ≤ lo to ≥ hi (about 5 steps of 1, 2 or 5 × 10^k); [0, 1] when empty. */
function niceTicks(lo: number, hi: number): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / 5;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * pow >= raw) ?? 10) * pow;
  const first = Math.floor(lo / step);
  const last = Math.ceil(hi / step);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

/** A short line of the run's conditions (machine left out), for the subtitle. */
function conditionLine(result: BenchResult): string {
  const s = conditionPairs(result.conditions)
    .filter(([, v]) => v.length <= 40)
    .map(([k, v]) => `${k}=${v}`)
    .join('  ');
  return s.length > 110 ? `${s.slice(0, 109)}…` : s;
}

/** The vega-lite spec of the chart (exported for tests and for tweaking). */
export function chartSpec(result: BenchResult): TopLevelSpec {
  const systems = Object.keys(result.results);
  const metrics = result.chart.metrics;
  const n = Math.max(1, metrics.length);
  // At most 3 panels a row (4 as 2 + 2) so that bars and their labels stay readable.
  const perRow = n <= 3 ? n : n === 4 ? 2 : 3;
  // Each panel carries its own y-axis (~45px) and spacing (~20px).
  const panelWidth = Math.max(60, Math.floor((CHART_WIDTH - 20) / perRow) - 65);
  const band = panelWidth / Math.max(1, systems.length);
  const labelFont = band < 34 ? 9 : 10;
  const colorDomain = systems;
  const colorRange = systems.map((_, i) => PALETTE[i % PALETTE.length] ?? '#888888');

  const panels = metrics.map(({ field, label }) => {
    const rows: Row[] = [];
    for (const system of systems) {
      const v = result.results[system]?.[field];
      if (typeof v === 'number' && Number.isFinite(v)) rows.push({ system, value: v, label: barLabel(v, band, labelFont) });
    }
    const max = Math.max(0, ...rows.map((r) => r.value));
    const min = Math.min(0, ...rows.map((r) => r.value));
    const order = rows.map((r) => r.system);
    const ticks = niceTicks(min, max * 1.12);
    const yScale = { domain: [ticks[0] ?? 0, ticks[ticks.length - 1] ?? 1], nice: false, zero: true };
    const yAxis = { title: null, grid: true, values: ticks, ...(max >= 10000 ? { format: '~s' } : {}) };
    return {
      title: { text: label, fontSize: 12 },
      width: panelWidth,
      height: perRow < n ? 180 : 220,
      data: { values: rows },
      encoding: {
        x: {
          field: 'system',
          type: 'nominal' as const,
          sort: order,
          axis: { title: null, labelAngle: -35, labelLimit: 160 },
        },
        y: { field: 'value', type: 'quantitative' as const, scale: yScale, axis: yAxis },
      },
      layer: [
        {
          mark: { type: 'bar' as const },
          encoding: {
            color: {
              field: 'system',
              type: 'nominal' as const,
              scale: { domain: colorDomain, range: colorRange },
              legend: null,
            },
          },
        },
        {
          mark: { type: 'text' as const, baseline: 'bottom' as const, dy: -3, fontSize: labelFont },
          encoding: { text: { field: 'label', type: 'nominal' as const } },
        },
      ],
    };
  });

  const subtitle = conditionLine(result);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: result.chart.title, ...(subtitle ? { subtitle } : {}), anchor: 'start', offset: 14 },
    background: 'white',
    padding: 10,
    config: { font: 'sans-serif', view: { stroke: null }, concat: { spacing: 20 } },
    columns: perRow,
    concat: panels,
    resolve: { scale: { x: 'independent', y: 'independent', color: 'shared' } },
  };
}

/** The chart of `result` as an SVG document. */
export async function chartSvg(result: BenchResult): Promise<string> {
  const vgSpec = compile(chartSpec(result)).spec;
  const view = new vega.View(vega.parse(vgSpec), { renderer: 'none', logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

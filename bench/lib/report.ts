// Printing a BenchResult: a plain-text table for people, one JSON document for
// tools (--json), and progress lines on stderr so stdout stays clean.

import type { BenchResult } from './result.js';

type Out = Pick<NodeJS.WriteStream, 'write'>;

/**
 * A number for people: integers with thousands separators, other values with
 * 2-3 significant decimals (trailing zeros dropped). NaN → "n/a".
 */
export function formatNumber(x: number): string {
  if (Number.isNaN(x)) return 'n/a';
  if (!Number.isFinite(x)) return x > 0 ? '∞' : '-∞';
  if (Object.is(x, -0)) x = 0;
  const abs = Math.abs(x);
  let digits: number;
  if (Number.isInteger(x) || abs >= 1000) digits = 0;
  else if (abs >= 100) digits = 1;
  else if (abs >= 1) digits = 2;
  else if (abs === 0) digits = 0;
  else digits = Math.min(6, 2 - Math.floor(Math.log10(abs))); // 3 significant digits
  const s = x.toLocaleString('en-US', { minimumFractionDigits: 0, maximumFractionDigits: digits, useGrouping: true });
  return s === '-0' ? '0' : s;
}

/** Systems in insertion order and the union of their fields in first-seen order. */
export function columns(result: BenchResult): { systems: string[]; fields: string[] } {
  const systems = Object.keys(result.results);
  const fields: string[] = [];
  const seen = new Set<string>();
  for (const sys of systems) {
    for (const f of Object.keys(result.results[sys] ?? {})) {
      if (!seen.has(f)) {
        seen.add(f);
        fields.push(f);
      }
    }
  }
  return { systems, fields };
}

/** A cell of the results table: the formatted figure, or "-" when the system has no such field. */
export function cell(result: BenchResult, system: string, field: string): string {
  const v = result.results[system]?.[field];
  return typeof v === 'number' ? formatNumber(v) : '-';
}

/** Conditions other than the machine, as "key=value" strings (numbers formatted, objects as compact JSON). */
export function conditionPairs(conditions: Record<string, unknown>): [string, string][] {
  const pairs: [string, string][] = [];
  for (const [k, v] of Object.entries(conditions)) {
    if (k === 'machine' || v === undefined) continue;
    pairs.push([k, formatValue(v)]);
  }
  return pairs;
}

export function formatValue(v: unknown): string {
  if (typeof v === 'number') return formatNumber(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v === null) return 'null';
  if (Array.isArray(v) && v.every((e) => typeof e !== 'object' || e === null)) return v.map(formatValue).join(', ');
  return JSON.stringify(v, jsonReplacer) ?? String(v);
}

function pad(s: string, width: number, right: boolean): string {
  const len = [...s].length;
  if (len >= width) return s;
  const fill = ' '.repeat(width - len);
  return right ? fill + s : s + fill;
}

function table(header: string[], rows: string[][], rightAlign: boolean[]): string[] {
  const widths = header.map((h, i) => Math.max([...h].length, ...rows.map((r) => [...(r[i] ?? '')].length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => pad(c, widths[i] ?? 0, rightAlign[i] ?? false))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
}

export function printTable(result: BenchResult, out: Out = process.stdout): void {
  clearProgress();
  const { systems, fields } = columns(result);
  const lines: string[] = [];
  lines.push(`${result.section ?? result.scenario}`);
  const conds = conditionPairs(result.conditions);
  if (conds.length > 0) lines.push(conds.map(([k, v]) => `${k}=${v}`).join('  '));
  lines.push('');
  lines.push(
    ...table(
      ['system', ...fields],
      systems.map((s) => [s, ...fields.map((f) => cell(result, s, f))]),
      [false, ...fields.map(() => true)],
    ),
  );

  const ratios = Object.entries(result.ratios);
  if (ratios.length > 0) {
    lines.push('');
    const w = Math.max(...ratios.map(([k]) => [...k].length));
    for (const [k, v] of ratios) lines.push(`${pad(k, w, false)}  ${formatNumber(v)}x`);
  }

  if (result.goals.length > 0) {
    lines.push('');
    for (const g of result.goals) {
      lines.push(`${g.met ? 'PASS' : 'MISS'}  ${g.name}: ${formatNumber(g.actual)} (target ${formatNumber(g.target)})`);
    }
  }

  if (result.notes.length > 0) {
    lines.push('');
    for (const n of result.notes) lines.push(`- ${n}`);
  }
  out.write(lines.join('\n') + '\n');
}

/** Numbers rounded to 3 decimals (integers stay integral), NaN/±Infinity → null. */
function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value !== 'number') return value;
  if (!Number.isFinite(value)) return null;
  if (Number.isInteger(value)) return value;
  const r = Math.round(value * 1000) / 1000;
  return Object.is(r, -0) ? 0 : r;
}

/** The one JSON document written with --json (single line). */
export function toJson(result: BenchResult): string {
  const doc = {
    scenario: result.scenario,
    conditions: result.conditions,
    results: result.results,
    ratios: result.ratios,
    goals: result.goals,
    notes: result.notes,
  };
  return JSON.stringify(doc, jsonReplacer);
}

// ---- progress on stderr ----

const lastByPrefix = new Map<string, number>();
let pendingTtyLine = false;

/**
 * A progress line on stderr. On a TTY it overwrites the previous one in place;
 * otherwise it is written as its own line, at most once a second per prefix
 * (the text before the first ':'), unless `force` is set (e.g. for a final line).
 */
export function progress(line: string, force = false): void {
  const err = process.stderr;
  if (err.isTTY) {
    const cols = err.columns > 0 ? err.columns - 1 : 0;
    const shown = cols > 0 && line.length > cols ? line.slice(0, cols) : line;
    err.write(`\r${shown}\x1b[K`);
    pendingTtyLine = true;
    return;
  }
  const colon = line.indexOf(':');
  const prefix = colon >= 0 ? line.slice(0, colon) : line;
  const now = performance.now();
  const last = lastByPrefix.get(prefix);
  if (!force && last !== undefined && now - last < 1000) return;
  lastByPrefix.set(prefix, now);
  err.write(line + '\n');
}

/** Erases an in-place progress line (TTY only), so what follows starts on a clean line. */
export function clearProgress(): void {
  if (pendingTtyLine && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  pendingTtyLine = false;
}

// bench/RESULTS.md keeps the latest run of each section: a section lives
// between `<!-- bench:KEY -->` and `<!-- /bench:KEY -->` and is replaced in
// place by the next run of the same key; everything else in the file (the
// hand-written part above the first section, other sections) is left alone.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { chartSvg } from './chart.js';
import { machineInfo } from './machine.js';
import { cell, columns, conditionPairs, formatNumber, formatValue } from './report.js';
import type { BenchResult } from './result.js';

const HEADER = `# Benchmark results

The sections below are written by \`npm run bench\`: each keeps the latest run
of one scenario (replaced in place on the next run), with its chart in
\`charts/\`. The hand-written part — profile notes — lives here, above the
first generated section, and is kept.
`;

export function sectionKey(result: BenchResult): string {
  return result.section ?? result.scenario;
}

/** File-name form of a section key: lowercase, runs of non-alphanumerics → '-'. */
export function slug(key: string): string {
  return (
    key
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '') || 'section'
  );
}

function startMarker(key: string): string {
  return `<!-- bench:${key} -->`;
}
function endMarker(key: string): string {
  return `<!-- /bench:${key} -->`;
}

/** A markdown table cell: no pipes or line breaks. */
function md(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

function mdTable(header: string[], rows: string[][], rightAlign: boolean[]): string[] {
  return [
    `| ${header.map(md).join(' | ')} |`,
    `| ${header.map((_, i) => (rightAlign[i] ? '---:' : '---')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(md).join(' | ')} |`),
  ];
}

function machineLine(result: BenchResult): string {
  const m = result.conditions.machine;
  const info: Record<string, unknown> = m !== null && typeof m === 'object' && !Array.isArray(m) ? (m as Record<string, unknown>) : machineInfo();
  return Object.entries(info)
    .map(([k, v]) => `${k}: ${formatValue(v)}`)
    .join(' · ');
}

/**
 * The markdown of one section (markers not included). `chartPath` is the
 * chart's path relative to RESULTS.md, or null for no chart.
 */
export function renderSection(result: BenchResult, chartPath: string | null, date: Date = new Date()): string {
  const key = sectionKey(result);
  const lines: string[] = [];
  lines.push(`## ${key}`, '');
  lines.push(`${date.toISOString().replace(/\.\d+Z$/, 'Z')} · \`${result.command.replace(/`/g, "'")}\``, '');
  lines.push(`Machine: ${machineLine(result)}`, '');

  const conds = conditionPairs(result.conditions);
  if (conds.length > 0) {
    for (const [k, v] of conds) lines.push(`- ${k}: ${v}`);
    lines.push('');
  }

  const { systems, fields } = columns(result);
  if (systems.length > 0) {
    lines.push(
      ...mdTable(
        ['system', ...fields],
        systems.map((s) => [s, ...fields.map((f) => cell(result, s, f))]),
        [false, ...fields.map(() => true)],
      ),
      '',
    );
  }

  const ratios = Object.entries(result.ratios);
  if (ratios.length > 0) {
    lines.push('Ratios:', '');
    for (const [k, v] of ratios) lines.push(`- ${k}: **${formatNumber(v)}x**`);
    lines.push('');
  }

  if (result.goals.length > 0) {
    lines.push(
      ...mdTable(
        ['goal', 'actual', 'target', 'met'],
        result.goals.map((g) => [g.name, formatNumber(g.actual), formatNumber(g.target), g.met ? '✅ met' : '❌ missed']),
        [false, true, true, false],
      ),
      '',
    );
  }

  if (result.notes.length > 0) {
    for (const n of result.notes) lines.push(`- ${n.replace(/\r?\n/g, ' ')}`);
    lines.push('');
  }

  if (chartPath !== null) lines.push(`![${key.replace(/[[\]]/g, '')}](${chartPath})`, '');

  return lines.join('\n').trimEnd() + '\n';
}

/** Replaces the section `key` of `text` with `block` (markers included), or appends it. */
export function replaceSection(text: string, key: string, block: string): string {
  const start = text.indexOf(startMarker(key));
  if (start < 0) {
    const base = text.trimEnd();
    return (base ? `${base}\n\n` : '') + block + '\n';
  }
  const end = text.indexOf(endMarker(key), start);
  let stop: number;
  if (end >= 0) {
    stop = end + endMarker(key).length;
  } else {
    // End marker lost (hand edit): the section runs to the next section or the end of the file.
    const next = text.indexOf('<!-- bench:', start + startMarker(key).length);
    stop = next >= 0 ? next : text.length;
    block += '\n\n';
  }
  return text.slice(0, start) + block + text.slice(stop);
}

async function writeAtomic(file: string, content: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, content);
  await rename(tmp, file);
}

/**
 * Keeps `result` as its section of `file` (default bench/RESULTS.md), with its
 * chart written to `charts/<slug>.svg` beside that file.
 */
export async function saveToResults(result: BenchResult, file = 'bench/RESULTS.md'): Promise<void> {
  const key = sectionKey(result);
  const dir = path.dirname(file);

  let chartPath: string | null = null;
  if (result.chart.metrics.length > 0 && Object.keys(result.results).length > 0) {
    const svg = await chartSvg(result);
    const chartsDir = path.join(dir, 'charts');
    await mkdir(chartsDir, { recursive: true });
    chartPath = `charts/${slug(key)}.svg`;
    await writeAtomic(path.join(chartsDir, `${slug(key)}.svg`), svg.endsWith('\n') ? svg : svg + '\n');
  }

  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(dir, { recursive: true });
    text = HEADER;
  }
  const block = `${startMarker(key)}\n${renderSection(result, chartPath)}${endMarker(key)}`;
  await writeAtomic(file, replaceSection(text, key, block));
}

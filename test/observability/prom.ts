// Reading what GET /metrics answers, as Prometheus would: the text format
// checked line by line, and sample values looked up by name and labels.
import assert from 'node:assert/strict';

export const PROM_CONTENT_TYPE = /^text\/plain; version=0\.0\.4; charset=utf-8$/;

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABELS = `\\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*",?)*\\}`;
// Prometheus parses values with Go's ParseFloat: NaN and Inf in any case (prom-client writes "Nan").
const VALUE = '(?:[-+]?(?:[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?|[Ii][Nn][Ff])|[Nn][Aa][Nn])';
const SAMPLE = new RegExp(`^(${NAME})(${LABELS})? (${VALUE})(?: -?[0-9]+)?$`);

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the exposition; fails the test on any line that is not a comment or a sample, or a sample without # TYPE. */
export function parseMetrics(text: string): Sample[] {
  const typed = new Set<string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      typed.add(type[1]!);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const m = SAMPLE.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    const name = m[1]!;
    const base = name.replace(/_(bucket|sum|count|total|created)$/, '');
    assert.ok(typed.has(name) || typed.has(base), `sample ${name} has no # TYPE before it`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    samples.push({ name, labels, value: Number(m[3]!.replace(/inf/i, 'Infinity').replace(/^nan$/i, 'NaN')) });
  }
  return samples;
}

/** The value of the sample with this name whose labels include `labels`; undefined when there is none. */
export function value(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

export async function scrape(baseUrl: string, headers: Record<string, string> = {}): Promise<Sample[]> {
  const res = await fetch(`${baseUrl}/metrics`, { headers });
  assert.equal(res.status, 200, await res.clone().text());
  assert.match(res.headers.get('content-type') ?? '', PROM_CONTENT_TYPE);
  return parseMetrics(await res.text());
}

export async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() as Record<string, unknown> };
}

// Where a server's CPU time went: reads a .cpuprofile (node --cpu-prof, as
// written by `npm run bench -- <scenario> --profile DIR`) and prints the
// functions with the most self time, and the same time grouped by area
// (source file of the project, or the library it is in).
//   node --import tsx bench/profile-summary.ts DIR/p2p-longlink [top]
// (a folder: its biggest profile, which is the main thread's)
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const [arg, topArg] = process.argv.slice(2);
if (!arg) {
  console.error('usage: profile-summary.ts FILE.cpuprofile|DIR [top]');
  process.exit(2);
}
const file = statSync(arg).isDirectory()
  ? readdirSync(arg).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(arg, f))
    .sort((a, b) => statSync(b).size - statSync(a).size)[0]!
  : arg;
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const total = [...self.values()].reduce((a, b) => a + b, 0);

function area(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  const own = /\/(dist|src)\/(.+)$/.exec(url);
  if (own) return own[2]!;
  if (url.startsWith('node:')) return url;
  return url.replace(/^file:\/\//, '');
}

const fns = new Map<string, number>();
const areas = new Map<string, number>();
for (const [id, us] of self) {
  const n = byId.get(id)!;
  const { functionName, url, lineNumber } = n.callFrame;
  const a = area(url, functionName);
  const key = `${functionName || '(anonymous)'}  ${a}:${lineNumber + 1}`;
  fns.set(key, (fns.get(key) ?? 0) + us);
  areas.set(a, (areas.get(a) ?? 0) + us);
}
// Inclusive time of the project's own functions (time in them and what they call).
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const inclusive = new Map<string, number>();
for (const [id, us] of self) {
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const { functionName, url, lineNumber } = byId.get(at)!.callFrame;
    if (!/\/(dist|src)\//.test(url)) continue;
    const key = `${functionName || '(anonymous)'}  ${area(url, functionName)}:${lineNumber + 1}`;
    if (seen.has(key)) continue;
    seen.add(key);
    inclusive.set(key, (inclusive.get(key) ?? 0) + us);
  }
}
const pct = (us: number) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
const top = Number(topArg ?? 25);
console.log(`${file}: ${(total / 1e6).toFixed(1)} s sampled`);
console.log('\nby area (self time):');
for (const [a, us] of [...areas].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${pct(us)}  ${a}`);
console.log('\nby function (self time):');
for (const [f, us] of [...fns].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${pct(us)}  ${f}`);
console.log('\nproject functions, inclusive time:');
for (const [f, us] of [...inclusive].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${pct(us)}  ${f}`);

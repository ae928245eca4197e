// `npm run bench -- <scenario> [options]`: runs one scenario (or `all`),
// prints a table (and with --json one JSON document on stdout), and keeps the
// latest full-size run of each scenario in bench/RESULTS.md with its chart.
import { mkdirSync } from 'node:fs';
import { printTable, toJson } from './lib/report.js';
import { saveToResults } from './lib/results-md.js';
import { stopAll } from './lib/procs.js';
import type { BenchResult } from './lib/result.js';
import { stopSystems, type Options } from './scenarios/common.js';
import { p2p } from './scenarios/p2p.js';
import { group } from './scenarios/group.js';
import { biggroup } from './scenarios/biggroup.js';
import { connections } from './scenarios/connections.js';
import { routing } from './scenarios/routing.js';
import { clusterP2p } from './scenarios/cluster-p2p.js';
import { dcP2p } from './scenarios/dc-p2p.js';
import { capacity } from './scenarios/capacity.js';
import { heartbeat } from './scenarios/heartbeat.js';

type Scenario = (o: Options) => Promise<BenchResult>;

const scenarios: Record<string, Scenario> = { connections, p2p, group, biggroup, routing, 'cluster-p2p': clusterP2p, 'dc-p2p': dcP2p, capacity, heartbeat };

const USAGE = `usage: npm run bench -- <scenario|all> [options]
scenarios: ${Object.keys(scenarios).join(', ')}, all
options:
  --quick            reduced size, each scenario under a minute (a smoke check)
  --connections N    users / connections where the scenario has them (biggroup: users online;
                     capacity: the connections to size for, default 10,000,000)
  --rate R           offered messages per second (latency at that rate); without it: saturation (capacity: the msg/s to size for, default 100,000)
  --duration S       seconds of measured load (connections: seconds held)
  --gateways G       gateway processes (routing, biggroup; connections: at least G server processes)
  --systems A,B      only these systems of the scenario (connections: longlink, raw-net, raw-ws;
                     heartbeat: longlink-tcp, longlink-ws, raw-net, raw-ws)
  --split            cluster-p2p, group: the split logic tier (auth, message x2, group, storage, risk)
                     beside the combined one (2 logic) in the same run, in interleaved rounds
  --rounds N         rounds of each layout with --split (default: cluster-p2p 3, group 2; quick 1), or of each run with --rules or --search (default 3),
                     or of each group size with biggroup (default 3; quick 1), or of each system with heartbeat (default 3; quick 1)
  --rules            p2p: Longlink with a 10,000-word block list, 1,000 mask words and a regex set loaded, beside Longlink
                     without rules, in interleaved rounds
  --search           p2p: Longlink keeping its full-text index (the default) beside Longlink with LONGLINK_SEARCH=0,
                     in interleaved rounds
  --json             print one JSON document per scenario on stdout (the table goes to stderr)
  --save / --no-save keep the result in bench/RESULTS.md (default: save unless --quick)
  --profile DIR      write CPU profiles of the Longlink server processes into DIR
`;

function parse(argv: string[]): { names: string[]; o: Options; json: boolean; save: boolean | undefined } {
  const names: string[] = [];
  let json = false;
  let save: boolean | undefined;
  const o: Options = { quick: false, command: `npm run bench -- ${argv.join(' ')}` };
  const num = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n <= 0) throw new Error(`${flag} needs a positive number`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--json': json = true; break;
      case '--save': save = true; break;
      case '--no-save': save = false; break;
      case '--connections': o.connections = num(a, argv[++i]); break;
      case '--rate': o.rate = num(a, argv[++i]); break;
      case '--duration': o.duration = num(a, argv[++i]); break;
      case '--gateways': o.gateways = num(a, argv[++i]); break;
      case '--split': o.split = true; break;
      case '--rules': o.rules = true; break;
      case '--search': o.search = true; break;
      case '--rounds': o.rounds = Math.round(num(a, argv[++i])); break;
      case '--profile': o.profile = argv[++i]; break;
      case '--systems': {
        const list = (argv[++i] ?? '').split(',').map((x) => x.trim()).filter(Boolean);
        if (list.length === 0) throw new Error(`--systems needs a comma-separated list\n${USAGE}`);
        o.systems = list;
        break;
      }
      case '-h': case '--help': process.stdout.write(USAGE); process.exit(0); break;
      default:
        if (a.startsWith('-')) throw new Error(`unknown option ${a}\n${USAGE}`);
        names.push(a);
    }
  }
  if (names.length === 0) throw new Error(USAGE);
  for (const n of names) if (n !== 'all' && !scenarios[n]) throw new Error(`unknown scenario ${n}\n${USAGE}`);
  if (o.split && names.some((n) => n !== 'cluster-p2p' && n !== 'group')) throw new Error(`--split is for cluster-p2p and group\n${USAGE}`);
  if (o.rules && names.some((n) => n !== 'p2p')) throw new Error(`--rules is for p2p\n${USAGE}`);
  if (o.search && (o.rules || names.some((n) => n !== 'p2p'))) throw new Error(`--search is for p2p, without --rules\n${USAGE}`);
  if (o.rounds !== undefined && !o.split && !o.rules && !o.search && names.some((n) => n !== 'biggroup')) throw new Error(`--rounds goes with --split, --rules, --search or biggroup\n${USAGE}`);
  if (o.systems && names.some((n) => n !== 'connections')) throw new Error(`--systems is for connections\n${USAGE}`);
  return { names, o, json, save };
}

/** What `all` runs: every scenario, p2p both at saturation and at 5,000 msg/s, routing at 2, 4 and 8 gateways. */
function expandAll(o: Options): { name: string; o: Options }[] {
  const runs: { name: string; o: Options }[] = [];
  for (const name of Object.keys(scenarios)) {
    if (name === 'p2p') {
      runs.push({ name, o: { ...o, command: 'npm run bench -- p2p' } });
      runs.push({ name, o: { ...o, rate: 5000, command: 'npm run bench -- p2p --rate 5000' } });
    } else if (name === 'routing') {
      for (const g of o.quick ? [2] : [2, 4, 8]) runs.push({ name, o: { ...o, gateways: g, command: `npm run bench -- routing --gateways ${g}` } });
    } else runs.push({ name, o: { ...o, command: `npm run bench -- ${name}` } });
  }
  return runs;
}

async function main(): Promise<void> {
  const { names, o, json, save } = parse(process.argv.slice(2));
  if (o.profile) mkdirSync(o.profile, { recursive: true });
  const runs = names.includes('all') ? expandAll(o) : names.map((name) => ({ name, o }));
  let failed = false;
  for (const run of runs) {
    const started = Date.now();
    try {
      const result = await scenarios[run.name]!(run.o);
      // From the scenario's start (servers, engines, load processes) to its result, every process of it stopped.
      result.conditions.wall_s = Math.round((Date.now() - started) / 1000);
      printTable(result, json ? process.stderr : process.stdout);
      if (json) process.stdout.write(`${toJson(result)}\n`);
      if (save ?? !run.o.quick) {
        await saveToResults(result);
        process.stderr.write('saved to bench/RESULTS.md\n');
      }
      // The ledger must balance whatever the speed: a lost or repeated message fails the run
      // (a goal's, e.g. capacity's measuring run, or a Longlink system's figures).
      for (const g of result.goals) {
        if (/ (lost|duplicated) = 0/.test(g.name) && !g.met) {
          process.stderr.write(`${run.name}: ${g.name}: ${g.actual}\n`);
          failed = true;
        }
      }
      for (const [system, r] of Object.entries(result.results)) {
        if ((system.startsWith('longlink') || run.o.split) && ((r.lost ?? 0) > 0 || (r.duplicated ?? 0) > 0)) {
          process.stderr.write(`${system}: lost ${r.lost}, duplicated ${r.duplicated}\n`);
          failed = true;
        }
      }
    } catch (err) {
      process.stderr.write(`${run.name} failed: ${(err as Error).stack ?? String(err)}\n`);
      failed = true;
    } finally {
      await stopAll();
    }
  }
  process.exit(failed ? 1 : 0);
}

process.on('SIGINT', () => {
  void stopSystems().then(stopAll).finally(() => process.exit(130));
});
await main();

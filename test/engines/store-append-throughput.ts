// Append throughput of a store at other commits and in this tree, in one run,
// side by side: not a test (nothing is asserted, no timing can fail), a
// measurement to repeat. Each version's src/ is taken from git (git archive
// into a temp folder beside a link to this tree's node_modules; '.' is this
// tree as it is) and its store is imported from there: PostgresStore (one
// PostgreSQL, fsync off like the tests, a fresh schema per run) or
// SqliteStore (the embedded server's, a fresh file per run). The runs are
// interleaved round by round (A B C, A B C, ...) so a machine busy with
// something else slows them alike. Reported per run: messages stored per
// second, and the CPU time spent per 1,000 of them (PostgreSQL: every server
// process, those that ended meanwhile too, so autovacuum's work counts;
// SQLite: this process, which runs it), which a machine shared with other
// work disturbs much less than the rate; then the median of each version,
// and its ratio to the first version's.
//
//   node --import tsx test/engines/store-append-throughput.ts [options] <rev> <rev> ...
//
//   <rev>            a commit (e.g. 0428cc3, the parent of the change index), '.' (this tree), or the
//                    path of another tree holding src/ (a variant being tried)
//   --rounds N       runs per version (default 5)
//   --messages N     messages appended per run (default 20000)
//   --writers N      concurrent appenders, each with its own conversations, as the bus's shards (default 4)
//   --batch N        messages per append (one transaction; default 20)
//   --pairs N        conversations per writer (1:1, or groups with --group; default 250)
//   --group N        instead of 1:1 conversations, groups of N members (default 0: 1:1)
//   --acks           after each append, the recipients' devices ack what it stored (advanceDelivered), as logic does
//   --store S        postgres (default) or sqlite
//   --durable        fsync on (PostgreSQL); synchronous 'full' (SQLite; default 'normal')
//   --slack N        changeSlack for the versions that have it (default: theirs)
//
// Example (before the change index, the commit that added it with the two after it, this tree):
//   node --import tsx test/engines/store-append-throughput.ts 0428cc3 998b7a4 .
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { MessageDraft } from '../../src/engines/store.js';
import { startPostgres } from '../helpers/services.js';

/** What the benchmark uses of a store, at any of the versions compared. */
interface AnyStore {
  append(drafts: readonly MessageDraft[]): Promise<unknown[]>;
  advanceDelivered(updates: readonly { userId: string; deviceId: string; conversationId: string; seq: number }[]): Promise<unknown[]>;
  close(): Promise<void>;
}
/** Opens a store for a run (a fresh schema or file). */
type Opener = (run: number) => Promise<AnyStore>;
interface PostgresClass {
  open(options: { url: string; schema?: string; poolSize?: number; changeSlack?: number }): Promise<AnyStore>;
}
type SqliteClass = new (options: { path: string; synchronous?: 'full' | 'normal'; changeSlack?: number }) => AnyStore;

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: 'string', default: '5' },
    messages: { type: 'string', default: '20000' },
    writers: { type: 'string', default: '4' },
    batch: { type: 'string', default: '20' },
    pairs: { type: 'string', default: '250' },
    group: { type: 'string', default: '0' },
    acks: { type: 'boolean', default: false },
    store: { type: 'string', default: 'postgres' },
    durable: { type: 'boolean', default: false },
    slack: { type: 'string' },
  },
});
const ROUNDS = Number(values.rounds);
const MESSAGES = Number(values.messages);
const WRITERS = Number(values.writers);
const BATCH = Number(values.batch);
const PAIRS = Number(values.pairs);
const GROUP = Number(values.group);
const revs = positionals.length > 0 ? positionals : ['.'];
const SQLITE = values.store === 'sqlite';
const SLACK = values.slack === undefined ? {} : { changeSlack: Number(values.slack) };

/** A version's src/ folder: this tree's, another tree's, or one extracted from git. */
function sourceOf(rev: string, temps: string[]): string {
  let dir = root;
  if (rev !== '.' && existsSync(join(rev, 'src/engines/store-postgres.ts'))) {
    dir = resolve(rev);
    if (!existsSync(join(dir, 'node_modules'))) symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  } else if (rev !== '.') {
    dir = mkdtempSync(join(tmpdir(), `longlink-rev-${rev.replace(/[^\w.-]/g, '_')}-`));
    temps.push(dir);
    execFileSync('sh', ['-c', `git -C "${root}" archive "${rev}" src | tar -x -C "${dir}"`]);
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  }
  return dir;
}

/** How a version's store is opened for a run. */
async function opener(dir: string, url: string, files: string): Promise<Opener> {
  if (SQLITE) {
    const { SqliteStore } = (await import(pathToFileURL(join(dir, 'src/engines/store-sqlite.ts')).href)) as { SqliteStore: SqliteClass };
    return (n) => Promise.resolve(new SqliteStore({ path: join(files, `run-${n}.db`), synchronous: values.durable ? 'full' : 'normal', ...SLACK }));
  }
  const { PostgresStore } = (await import(pathToFileURL(join(dir, 'src/engines/store-postgres.ts')).href)) as { PostgresStore: PostgresClass };
  return async (n) => {
    const schema = `tput_${n}`;
    const store = await PostgresStore.open({ url, schema, poolSize: WRITERS + 2, ...SLACK });
    // Transaction ids drawn, as in a database that has run a while (see drawXids).
    await drawXids(url, schema, 20_000);
    return store;
  };
}

let serial = 0;
/** A writer's conversations: 1:1 pairs (w<i>a<k>, w<i>b<k>), or groups of GROUP members. */
function conversationsOf(writer: number): { id: string; members: string[]; kind: 'direct' | 'group' }[] {
  return Array.from({ length: PAIRS }, (_, k) => {
    if (GROUP > 0) {
      const members = Array.from({ length: GROUP }, (_, m) => `w${writer}g${k}m${m}`);
      return { id: `g:w${writer}g${k}`, members, kind: 'group' as const };
    }
    const [a, b] = [`w${writer}a${k}`, `w${writer}b${k}`];
    return { id: `u:${a}:${b}`, members: [a, b], kind: 'direct' as const };
  });
}

function draft(c: { id: string; members: string[]; kind: 'direct' | 'group' }, from: string): MessageDraft {
  serial++;
  return {
    conversationId: c.id, kind: c.kind, members: c.members, fromUser: from, fromDevice: `${from}-d`,
    clientMsgId: `m-${serial}`, serverMsgId: `s-${serial}`, text: `message ${serial} of the throughput run`, sentAtMs: Date.now(),
  };
}

/** A random generator with a seed, so every version gets the same sequence of batches. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TICKS_PER_SECOND = 100; // USER_HZ, as /proc reports times on Linux

/** CPU seconds a process used: its own (fields 14, 15 of /proc/<pid>/stat), with its waited-for children's (16, 17). */
function cpuOf(pid: number, children: boolean): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const at = (field: number) => Number(fields[field - 3]);
    return (at(14) + at(15) + (children ? at(16) + at(17) : 0)) / TICKS_PER_SECOND;
  } catch {
    return 0; // ended meanwhile: its time is in its parent's children's
  }
}

/** CPU seconds of a PostgreSQL server so far: the postmaster, the children it reaped, and those running. */
function serverCpu(postmaster: number): number {
  let total = cpuOf(postmaster, true);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === postmaster) total += cpuOf(Number(name), false);
    } catch {
      // gone
    }
  }
  return total;
}

/**
 * Transaction ids drawn (subtransactions that write, in one statement), as a
 * database that has run a while has: what a store derives from them (the
 * change index's numbers) is then as it is in service, not as on a new one.
 */
async function drawXids(url: string, schema: string, count: number): Promise<void> {
  const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
  await client.connect();
  try {
    await client.query(`CREATE TABLE IF NOT EXISTS xid_burn (n int)`);
    await client.query(`DO $$ BEGIN FOR i IN 1..${count} LOOP BEGIN INSERT INTO xid_burn VALUES (i); EXCEPTION WHEN OTHERS THEN NULL; END; END LOOP; END $$`);
    await client.query(`DROP TABLE xid_burn`);
  } finally {
    await client.end();
  }
}

/** CPU seconds of this process so far. */
function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * One run: a fresh store, every conversation created (and, on PostgreSQL,
 * 20,000 transaction ids drawn) untimed, then MESSAGES appended by WRITERS
 * at once (timed).
 */
async function run(open: Opener, n: number, round: number, cpu: () => number): Promise<{ rate: number; cpuMs: number }> {
  const store = await open(n);
  try {
    const all = Array.from({ length: WRITERS }, (_, w) => conversationsOf(w));
    // Created, a group by its first message (its members recorded as in a 1:1: the store creates them).
    for (const list of all) {
      for (let i = 0; i < list.length; i += 100) await store.append(list.slice(i, i + 100).map((c) => draft(c, c.members[0]!)));
    }
    const perWriter = Math.ceil(MESSAGES / WRITERS / BATCH);
    const seq = new Map<string, number>();
    const cpuBefore = cpu();
    const started = process.hrtime.bigint();
    await Promise.all(all.map(async (list, w) => {
      const random = prng(round * 1000 + w);
      for (let b = 0; b < perWriter; b++) {
        const batch = Array.from({ length: BATCH }, () => {
          const c = list[Math.floor(random() * list.length)]!;
          return draft(c, c.members[Math.floor(random() * c.members.length)]!);
        });
        await store.append(batch);
        if (!values.acks) continue;
        // Each recipient's device acks up to where it stands (a 1:1: the other member; a group: one member per message).
        const acks = batch.map((d) => {
          const to = d.members.find((m) => m !== d.fromUser)!;
          const n = (seq.get(d.conversationId) ?? 1) + 1;
          seq.set(d.conversationId, n);
          return { userId: to, deviceId: `${to}-d`, conversationId: d.conversationId, seq: n };
        });
        await store.advanceDelivered(acks);
      }
    }));
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const messages = perWriter * WRITERS * BATCH;
    return { rate: messages / seconds, cpuMs: ((cpu() - cpuBefore) * 1000 * 1000) / messages };
  } finally {
    await store.close();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const temps: string[] = [];
const files = mkdtempSync(join(tmpdir(), 'longlink-tput-'));
temps.push(files);
const pgServer = SQLITE ? undefined : await startPostgres({ durable: values.durable });
try {
  const stores = await Promise.all(revs.map((r) => opener(sourceOf(r, temps), pgServer?.url ?? '', files)));
  const measureCpu = pgServer ? () => serverCpu(pgServer.pid) : ownCpu;
  const results = revs.map(() => [] as number[]);
  const cpu = revs.map(() => [] as number[]);
  console.log(`${SQLITE ? 'SqliteStore' : 'PostgresStore'}: ${MESSAGES} messages a run, ${WRITERS} writers, batches of ${BATCH}, ${PAIRS} ${GROUP > 0 ? `groups of ${GROUP}` : '1:1 conversations'} each`
    + `${values.acks ? ', acks' : ''}${values.durable ? ', durable' : ''}${values.slack !== undefined ? `, changeSlack ${values.slack}` : ''}`);
  let k = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < revs.length; i++) {
      const { rate, cpuMs } = await run(stores[i]!, ++k, round, measureCpu);
      results[i]!.push(rate);
      cpu[i]!.push(cpuMs);
      console.log(`round ${round + 1} ${revs[i]}: ${rate.toFixed(0)} msg/s, ${cpuMs.toFixed(0)} ms CPU per 1,000`);
    }
  }
  const base = median(results[0]!);
  const baseCpu = median(cpu[0]!);
  const width = Math.max(...revs.map((r) => r.length));
  for (let i = 0; i < revs.length; i++) {
    const m = median(results[i]!);
    const c = median(cpu[i]!);
    console.log(`${revs[i]!.padEnd(width)}  rate ${m.toFixed(0).padStart(6)} msg/s (${(m / base).toFixed(2)}×)  ${pgServer ? 'PostgreSQL' : 'process'} CPU ${c.toFixed(0).padStart(4)} ms per 1,000 (${(c / baseCpu).toFixed(2)}×)`
      + `   runs: ${results[i]!.map((r) => r.toFixed(0)).join(' ')} msg/s; ${cpu[i]!.map((r) => r.toFixed(0)).join(' ')} ms`);
  }
} finally {
  await pgServer?.stop();
  for (const d of temps) rmSync(d, { recursive: true, force: true });
}

// Failover on a timeout, decided with a witness (src/dc/witness.ts), on a
// real Redis as the witness and real stores (SQLite) as each datacenter's:
// a datacenter keeps its homes while its lease is held or it hears every
// peer; a peer takes them over only once it is unheard AND its lease, held
// before, ran out (a cut link moves nothing, nor does a datacenter not up
// yet), and acts on the takeover after a grace.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/engines/store-sqlite.js';
import { Serving } from '../../src/dc/homes.js';
import { Witness, TAKEOVER_GRACE_MS } from '../../src/dc/witness.js';
import { AutoFailover } from '../../src/dc/failover.js';
import { startRedis, type RedisServer } from '../helpers/services.js';

const LEASE_MS = 1000;
let redis: RedisServer;
let dir: string;
const closers: (() => unknown)[] = [];

before(async () => {
  redis = await startRedis();
  dir = mkdtempSync(join(tmpdir(), 'longlink-witness-'));
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(check: () => boolean | Promise<boolean>, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms: ${what()}`);
    await sleep(20);
  }
}

let n = 0;
function witness(): Witness {
  const w = new Witness(redis.url, `t${++n}:`, LEASE_MS);
  closers.push(() => w.close());
  return w;
}

/** Datacenter `name`'s store, and a switch that makes it unreachable from the others (a cut link, or the datacenter gone). */
function datacenterStore(name: string): { store: SqliteStore; reachable: boolean; open(): Promise<SqliteStore> } {
  const store = new SqliteStore({ path: join(dir, `${name}-${++n}.sqlite`) });
  closers.push(() => store.close());
  const d = {
    store,
    reachable: true,
    async open() {
      if (!d.reachable) throw new Error(`${name} is unreachable`);
      return store;
    },
  };
  return d;
}

function serving(dc: string, own: SqliteStore, peers: { name: string; open(): Promise<SqliteStore> }[], w?: Witness): Serving {
  const s = new Serving(dc, { store: own, peers: peers.map((p) => ({ name: p.name, store: () => p.open() })), witness: w }, { refreshMs: 100, startupHoldMs: 300 });
  s.start();
  closers.push(() => s.stop());
  return s;
}

test('the witness: one holder per home; renewing keeps it, another cannot take it until it ran out; released only by its holder; never again under an older record', async () => {
  const w = witness();
  const before = performance.now();
  const until = await w.renew('a', 'a', 0);
  assert.ok(until !== undefined && until > before && until <= before + LEASE_MS, `held until a time within the lease (${until! - before} ms)`);
  assert.equal(await w.renew('a', 'b', 0), undefined, 'b does not hold what a holds');
  assert.equal(await w.take('a', 'b', 1), false);
  assert.equal(await w.holder('a'), 'a');
  await sleep(LEASE_MS + 200);
  assert.equal(await w.holder('a'), undefined, 'not renewed: it ran out');
  assert.equal(await w.take('a', 'b', 0), false, 'a take needs a record newer than any the lease was held under');
  assert.equal(await w.take('a', 'b', 1), true);
  assert.equal(await w.take('a', 'a', 2), false, 'held');
  await w.release('a', 'a');
  assert.equal(await w.holder('a'), 'b', 'only its holder releases it');
  await w.release('a', 'b');
  assert.equal(await w.holder('a'), undefined);
  // Taken over under epoch 1: a, back (or cut off and renewing under its old record), never gets it again under epoch 0.
  assert.equal(await w.renew('a', 'a', 0), undefined);
  assert.equal(await w.holder('a'), undefined);
  assert.ok((await w.renew('a', 'a', 2)) !== undefined, 'handed back under a newer record: a holds it again');
});

test('a datacenter serves its homes while its lease is held or it hears every peer; with neither, it holds them', async () => {
  const w = witness();
  const a = datacenterStore('a');
  const b = datacenterStore('b');
  const atA = serving('a', a.store, [{ name: 'b', open: () => b.open() }], w);
  await until(() => atA.route('a') === 'a', 3000, () => `a serves its homes: ${atA.route('a')}`);
  // b unreachable: the lease keeps a serving.
  b.reachable = false;
  await sleep(LEASE_MS * 2);
  assert.equal(atA.route('a'), 'a', 'lease held: served');
  // The witness down too: once the lease ran out, nothing tells a that b is not taking its homes over.
  await redis.kill();
  try {
    await until(() => atA.route('a') === 'hold', LEASE_MS * 3, () => `a holds its homes: ${atA.route('a')}`);
    // b heard again (the witness still down): served, since b could not be taking them over unseen.
    b.reachable = true;
    await until(() => atA.route('a') === 'a', 3000, () => `a serves its homes again: ${atA.route('a')}`);
  } finally {
    await redis.start();
  }
});

test('a peer gone past its lease is taken over by the other (the lease first, then the record, acted on after the grace); a cut link moves nothing', async () => {
  const w = witness();
  const a = datacenterStore('a');
  const b = datacenterStore('b');
  const atA = serving('a', a.store, [{ name: 'b', open: () => b.open() }], w);
  const atB = serving('b', b.store, [{ name: 'a', open: () => a.open() }], w);
  // c never came up (it may only be starting): never taken over.
  const c = datacenterStore('c');
  c.reachable = false;
  const auto = new AutoFailover({ dc: 'b', store: b.store, peers: new Map([['a', () => a.open()], ['c', () => c.open()]]), serving: atB, witness: w }, { afterMs: 1000, checkMs: 100 });
  auto.start();
  closers.push(() => auto.stop());
  await until(() => atA.route('a') === 'a' && atB.route('a') === 'a', 3000, () => 'each serves its own homes');

  // The link cut: b does not hear a, but a renews its lease at the witness: nothing moves.
  a.reachable = false;
  b.reachable = false;
  await sleep(2500);
  assert.equal(auto.taken, 0, 'a cut link is not a lost datacenter');
  assert.equal(atA.route('a'), 'a');
  assert.equal(atB.route('a'), 'a', 'b still sends a\'s writes to a');
  a.reachable = true;
  b.reachable = true;

  // a gone: its processes stop renewing, its store unreachable.
  atA.stop();
  a.reachable = false;
  await until(() => auto.taken === 1, 10_000, () => 'b took a\'s homes over');
  assert.equal(await w.holder('a'), 'b');
  const record = (await b.store.dcHomes()).get('a');
  assert.equal(record?.servedBy, 'b');
  assert.equal(record?.epoch, 1);
  await until(() => atB.route('a') !== 'a', 1000, () => 'b read the record');
  assert.equal(atB.route('a'), 'hold', 'not before the grace');
  await until(() => atB.route('a') === 'b', TAKEOVER_GRACE_MS + 2000, () => `b serves a's homes: ${atB.route('a')}`);
  assert.ok(Date.now() - record!.changedAtMs >= TAKEOVER_GRACE_MS);
  await sleep(LEASE_MS * 2);
  assert.equal(await w.holder('a'), 'b', 'b renews the lease of the homes it serves');
  assert.equal((await b.store.dcHomes()).get('c'), undefined, 'c, never seen up, is not failed over');
  assert.equal(auto.taken, 1);
});

// RedisBus stream bounds, against a real redis-server: every stream is
// trimmed by age and bytes (by its readers, and by its writers as a
// backstop) as well as by length, and of what was handled (acked uplink, a
// gateway's own downlink once read); what a lagging reader lost is counted
// and shown in /metrics; traffic read in time loses nothing.
// (faults/README.md, "Stream bounds", says what each bound costs whom.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { create, toBinary } from '@bufbuild/protobuf';
import { Redis } from 'ioredis';
import { RedisBus, packDown, DOWN_ENTRY_BYTES, type RedisBusOptions } from '../../src/engines/bus-redis.js';
import { down, upEnvelope, type Down, type UpEnvelope } from '../../src/engines/bus.js';
import { DownBatchSchema, DownSchema } from '../../src/protocol/gen/longlink/internal/v1/envelope_pb.js';
import { ErrorCode, FrameSchema, encodeFrame, makeFrame } from '../../src/protocol/index.js';
import { Metrics } from '../../src/observability/metrics.js';
import { DEFAULTS, loadServerConfig } from '../../src/config.js';
import { startRedis, type RedisServer } from '../helpers/services.js';

let redis: RedisServer;
let raw: Redis;
let n = 0;
const buses: RedisBus[] = [];
before(async () => {
  redis = await startRedis();
  raw = new Redis(redis.url);
});
after(async () => {
  await Promise.all(buses.map((b) => b.close()));
  raw?.disconnect();
  await redis?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const waitFor = async (check: () => boolean | Promise<boolean>, what: string | (() => string), timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(20);
  }
};

/** A bus with a 1 s max age both ways, bounds applied every 100 ms (writers: every 500 ms). */
const bus = (prefix: string, nodeId: string, extra: Partial<RedisBusOptions> = {}) => {
  const b = new RedisBus({
    url: redis.url, nodeId, prefix, shards: 1, leaseMs: 2000, blockMs: 100,
    maxUpAgeMs: 1000, maxDownAgeMs: 1000, trimIntervalMs: 100, ...extra,
  });
  buses.push(b);
  return b;
};

// The user id carries the tag the test follows; `pad` bytes of text make an entry large.
const upMessage = (tag: string, pad = 0): UpEnvelope => upEnvelope({
  origin: { node: 'gw-1', connId: 1n, userId: tag, deviceId: 'd1', platform: 'ios' },
  partition: 'k',
  body: {
    case: 'frame',
    value: create(FrameSchema, { id: 1, body: { case: 'send', value: { conversationId: 'u:a:b', clientMsgId: tag, text: 'x'.repeat(pad) } } }),
  },
});
const tagOf = (m: UpEnvelope): string => m.origin?.userId ?? '';
const reply = (i: number, pad = 0): Down => down({
  case: 'reply',
  value: { connId: BigInt(i), frame: encodeFrame(makeFrame(i, { case: 'error', value: { code: ErrorCode.BAD_REQUEST, message: 'x'.repeat(pad) } })) },
});
const connOf = (m: Down): number => (m.kind.case === 'reply' ? Number(m.kind.value.connId) : -1);

/** The ids' time parts of a stream's entries (ms, Redis's clock). */
async function entryTimes(key: string): Promise<number[]> {
  return (await raw.xrange(key, '-', '+')).map(([id]) => Number(id.split('-')[0]));
}
async function redisNowMs(): Promise<number> {
  const [s, us] = await raw.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}
async function memoryUsage(key: string): Promise<number> {
  return Number(await raw.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') ?? 0);
}

describe('RedisBus stream bounds', () => {
  test('what logic acked and what a gateway read of its own stream go at the next trim; nothing else does before the max age', async () => {
    const prefix = `read${++n}:`;
    // A long max age: only acks and reads let entries go here.
    const [gateway, logic] = [bus(prefix, 'gw-1', { maxUpAgeMs: 60_000, maxDownAgeMs: 60_000 }), bus(prefix, 'logic-1', { maxUpAgeMs: 60_000, maxDownAgeMs: 60_000 })];
    const handled: string[] = [];
    const got: Down[] = [];
    let stall: Promise<void> | undefined;
    let release!: () => void;
    const up = logic.consumeUp(async (batch) => {
      if (batch.some((m) => tagOf(m) === 'a10')) {
        stall = new Promise((r) => {
          release = r;
        });
        await stall;
      }
      handled.push(...batch.map(tagOf));
    });
    const downSub = gateway.consumeDown('gw-1', (batch) => got.push(...batch));
    try {
      await sleep(300); // the readers are in place
      for (let i = 0; i < 10; i++) await gateway.publishUp(upMessage(`a${i}`));
      for (let i = 0; i < 20; i++) await logic.publishDown('gw-1', reply(i));
      await waitFor(() => handled.length === 10 && got.length === 20, 'every entry read');
      await waitFor(async () => (await raw.xlen(`${prefix}up:0`)) === 0 && (await raw.xlen(`${prefix}down:gw-1`)) === 0,
        'acked and read entries trimmed', 2000);
      // An entry in hand (not acked yet) and those behind it stay.
      for (let i = 10; i < 15; i++) await gateway.publishUp(upMessage(`a${i}`));
      await waitFor(() => stall !== undefined, 'the handler holds a10');
      await sleep(500);
      assert.equal(await raw.xlen(`${prefix}up:0`), 5, 'a10 (pending) and a11..a14 (not delivered) kept');
      release();
      await waitFor(() => handled.length === 15, 'the rest handled');
      await waitFor(async () => (await raw.xlen(`${prefix}up:0`)) === 0, 'then trimmed', 2000);
      assert.equal(logic.counters.upTrimmedUnprocessed, 0);
      assert.equal(gateway.counters.downTrimmedUnread, 0);
      assert.deepEqual(handled, Array.from({ length: 15 }, (_, i) => `a${i}`));
    } finally {
      release?.();
      await up.close();
      await downSub.close();
    }
  });

  test('entries older than the max age are gone from a stream read by several (the broadcast one), with no new writes', async () => {
    const prefix = `age${++n}:`;
    const [gw1, gw2, logic] = [bus(prefix, 'gw-1'), bus(prefix, 'gw-2'), bus(prefix, 'logic-1')];
    const got = { 'gw-1': [] as Down[], 'gw-2': [] as Down[] };
    const subs = (['gw-1', 'gw-2'] as const).map((g) => (g === 'gw-1' ? gw1 : gw2).consumeDown(g, (batch) => got[g].push(...batch)));
    const key = `${prefix}down:*`;
    try {
      await sleep(300);
      for (let i = 0; i < 20; i++) await logic.publishDown('*', reply(i));
      await waitFor(() => got['gw-1'].length === 20 && got['gw-2'].length === 20, 'read by both');
      await sleep(200);
      assert.ok((await raw.xlen(key)) > 0, 'read entries of a shared stream stay until they age');
      await waitFor(async () => (await raw.xlen(key)) === 0, 'trimmed by age', 3000);
      // New entries: the old ones are gone, the new ones kept; what is kept is never older than the max age (plus a trim interval).
      await logic.publishDown('*', reply(100));
      await waitFor(() => got['gw-1'].length === 21 && got['gw-2'].length === 21, 'the new one read');
      const now = await redisNowMs();
      const times = await entryTimes(key);
      assert.equal(times.length, 1);
      assert.ok(times.every((t) => now - t <= 1000 + 300), 'nothing kept past the max age');
      assert.equal(gw1.counters.downTrimmedUnread + gw2.counters.downTrimmedUnread, 0);
    } finally {
      for (const sub of subs) await sub.close();
    }
  });

  test('with no reader, the writers trim by age too (a backstop, every 5 trim intervals)', async () => {
    const prefix = `wage${++n}:`;
    const [gateway, logic] = [bus(prefix, 'gw-1'), bus(prefix, 'logic-1')];
    for (let i = 0; i < 10; i++) await gateway.publishUp(upMessage(`a${i}`));
    for (let i = 0; i < 10; i++) await logic.publishDown('gw-gone', reply(i));
    await sleep(1600); // older than the max age, and the writers' next trims are due
    await gateway.publishUp(upMessage('fresh'));
    await logic.publishDown('gw-gone', reply(99));
    await waitFor(async () => (await raw.xlen(`${prefix}up:0`)) === 1 && (await raw.xlen(`${prefix}down:gw-gone`)) === 1,
      () => 'only the fresh entry left in each stream', 3000);
  });

  test('a downlink stream nobody reads stays within its byte bound while a producer writes large entries for seconds', async () => {
    const prefix = `bytes${++n}:`;
    const maxDownBytes = 4 * 1024 * 1024;
    // Long max age: only the byte bound (and the length bound) can hold this stream.
    const producer = bus(prefix, 'logic-1', { maxDownAgeMs: 600_000, maxDownBytes, trimIntervalMs: 100 });
    const key = `${prefix}down:gw-stuck`;
    let written = 0;
    let peak = 0;
    const started = Date.now();
    const timeline: [number, number][] = []; // [ms, bytes written so far]
    let sampledAt = 0;
    while (Date.now() - started < 4000) {
      // One turn: 8 replies of ~30 KB (packed into entries of ~64 KiB), ~240 KB per turn.
      await Promise.all(Array.from({ length: 8 }, (_, i) => producer.publishDown('gw-stuck', reply(written * 8 + i, 30_000))));
      written++;
      timeline.push([Date.now(), written * 8 * 30_000]);
      if (Date.now() - sampledAt > 50) {
        sampledAt = Date.now();
        peak = Math.max(peak, await memoryUsage(key));
      }
    }
    const writtenBytes = written * 8 * 30_000;
    const final = await memoryUsage(key);
    // The writer applies the bound every 500 ms: above it, at most what was written in one such interval (here: the most
    // written in any 750 ms, for the timer's slack), plus Redis's overhead per entry (~10%).
    let burst = 0;
    for (let i = 0, j = 0; i < timeline.length; i++) {
      while (timeline[j]![0] < timeline[i]![0] - 750) j++;
      burst = Math.max(burst, timeline[i]![1] - timeline[j]![1]);
    }
    const allowed = (maxDownBytes + burst) * 1.15;
    assert.ok(writtenBytes > 5 * maxDownBytes, `wrote ${(writtenBytes / 2 ** 20).toFixed(0)} MiB, well past the bound`);
    assert.ok(peak <= allowed, `peak ${(peak / 2 ** 20).toFixed(1)} MiB within ${(allowed / 2 ** 20).toFixed(1)} MiB`);
    await sleep(600);
    await producer.publishDown('gw-stuck', reply(0, 30_000)); // the next write's trim brings it under the bound
    await waitFor(async () => (await memoryUsage(key)) <= maxDownBytes, 'under the byte bound after the next trim', 3000);
    // An entry never passes ~64 KiB (plus one message): the stream holds many of them.
    const entries = await raw.xlen(key);
    assert.ok(entries >= 30, `${entries} entries kept`);
    console.log(`# downlink byte bound: wrote ${(writtenBytes / 2 ** 20).toFixed(0)} MiB in 4 s (at most ${(burst / 2 ** 20).toFixed(1)} MiB in 750 ms), `
      + `peak ${(peak / 2 ** 20).toFixed(1)} MiB, `
      + `final ${(final / 2 ** 20).toFixed(1)} MiB, bound ${(maxDownBytes / 2 ** 20).toFixed(0)} MiB, ${entries} entries kept`);
  });

  test('a gateway reading large replies as they come keeps its stream under the byte bound and counts nothing lost', async () => {
    const prefix = `rbytes${++n}:`;
    const maxDownBytes = 2 * 1024 * 1024;
    // Only the reader's bound here (the producer's is the default 64 MiB): it knows what it has read.
    const [producer, gateway] = [
      bus(prefix, 'logic-1', { maxDownAgeMs: 600_000 }),
      bus(prefix, 'gw-1', { maxDownAgeMs: 600_000, maxDownBytes }),
    ];
    const got: number[] = [];
    const sub = gateway.consumeDown('gw-1', (batch) => got.push(...batch.map(connOf)));
    try {
      await sleep(300);
      for (let i = 0; i < 200; i++) {
        await producer.publishDown('gw-1', reply(i, 30_000)); // ~6 MB, read as it comes
        if (i % 20 === 19) await sleep(20);
      }
      await waitFor(() => got.length === 200, 'every reply read');
      await waitFor(async () => (await memoryUsage(`${prefix}down:gw-1`)) <= maxDownBytes, 'trimmed under the bound', 3000);
      assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => i), 'all, in order');
      assert.equal(gateway.counters.downTrimmedUnread, 0);
      const stats = gateway.boundsStats();
      assert.ok((stats.streamBytes.get('down:gw-1') ?? Infinity) <= maxDownBytes);
      assert.equal(stats.maxBytes.get('down'), maxDownBytes);
    } finally {
      await sub.close();
    }
  });

  test('uplink entries trimmed while no logic node ran are counted by the owner that takes the shard, never handled, never acked', async () => {
    const prefix = `gone${++n}:`;
    const gateway = bus(prefix, 'gw-1');
    // Published while nobody consumes; the first consumer's group is made when it takes the shard.
    await raw.xgroup('CREATE', `${prefix}up:0`, 'logic', '0', 'MKSTREAM');
    for (let i = 0; i < 30; i++) await gateway.publishUp(upMessage(`old${i}`));
    await sleep(1300);
    const logic = bus(prefix, 'logic-1');
    const handled: string[] = [];
    const sub = logic.consumeUp(async (batch) => {
      handled.push(...batch.map(tagOf));
    });
    try {
      await waitFor(() => logic.counters.upTrimmedUnprocessed === 30, () => `30 counted lost (${logic.counters.upTrimmedUnprocessed})`);
      for (let i = 0; i < 5; i++) await gateway.publishUp(upMessage(`new${i}`));
      await waitFor(() => handled.length === 5, 'the new entries handled');
      assert.deepEqual(handled, Array.from({ length: 5 }, (_, i) => `new${i}`), 'the trimmed ones never reach the handler');
      await sleep(300);
      assert.equal(logic.counters.upTrimmedUnprocessed, 30, 'counted once');
      // The group's lag is what is left to read (the gap taken in), not the trimmed entries.
      const group = await raw.xinfo('GROUPS', `${prefix}up:0`) as unknown[][];
      const fields = Object.fromEntries(Array.from({ length: group[0]!.length / 2 }, (_, i) => [group[0]![2 * i], group[0]![2 * i + 1]]));
      assert.equal(fields.lag, 0);
      assert.equal(fields.pending, 0);
    } finally {
      await sub.close();
    }
  });

  test('a logic node that lags past the uplink max age: the gauge shows the age, the counter what was trimmed, and every entry is handled or counted', async () => {
    const prefix = `lag${++n}:`;
    const [gateway, logic] = [bus(prefix, 'gw-1'), bus(prefix, 'logic-1')];
    const metrics = new Metrics({ processMetrics: false });
    metrics.watchBus(async () => logic.boundsStats(), logic.counters);
    const handled: string[] = [];
    let stall: Promise<void> | undefined;
    let release!: () => void;
    const sub = logic.consumeUp(async (batch) => {
      if (batch.some((m) => tagOf(m) === 'stall')) {
        stall = new Promise((r) => {
          release = r;
        });
        await stall;
      }
      handled.push(...batch.map(tagOf));
    });
    try {
      await sleep(300);
      await gateway.publishUp(upMessage('stall'));
      await waitFor(() => stall !== undefined, 'the handler stalls');
      const published = ['stall'];
      // 2.5 s of entries behind the stalled batch: the older ones pass the 1 s max age.
      for (let i = 0; i < 25; i++) {
        published.push(`m${i}`);
        await gateway.publishUp(upMessage(`m${i}`));
        await sleep(100);
      }
      const scrape = await metrics.scrape();
      const age = Number(/longlink_bus_oldest_unprocessed_age_seconds\{shard="0"\} ([\d.]+)/.exec(scrape)?.[1]);
      assert.ok(age >= 2, `the stalled batch is ~2.5 s old: gauge ${age}`);
      assert.match(scrape, /longlink_bus_max_age_seconds\{direction="up"\} 1\b/);
      assert.match(scrape, /longlink_bus_max_age_seconds\{direction="down"\} 1\b/);
      const lost = logic.counters.upTrimmedUnprocessed;
      assert.ok(lost >= 10, `entries trimmed unprocessed counted: ${lost}`);
      assert.match(scrape, new RegExp(`longlink_bus_trimmed_unprocessed_total ${lost}\\b`));
      release();
      await waitFor(() => handled.length + logic.counters.upTrimmedUnprocessed >= published.length, 'the rest handled');
      await sleep(500);
      // Exactly once each: handled (the stalled batch, in hand while it aged, is still acked) or counted lost.
      assert.equal(handled.length + logic.counters.upTrimmedUnprocessed, published.length,
        `handled ${handled.length} + lost ${logic.counters.upTrimmedUnprocessed} = published ${published.length}`);
      assert.equal(handled[0], 'stall');
      assert.deepEqual(handled.slice(1), published.slice(published.length - handled.length + 1), 'the newest ones handled, in order');
      const group = await raw.xinfo('GROUPS', `${prefix}up:0`) as unknown[][];
      const fields = Object.fromEntries(Array.from({ length: group[0]!.length / 2 }, (_, i) => [group[0]![2 * i], group[0]![2 * i + 1]]));
      assert.equal(fields.pending, 0, 'everything handled was acked');
      assert.equal(fields.lag, 0);
      await waitFor(async () => /longlink_bus_oldest_unprocessed_age_seconds\{shard="0"\} 0\b/.test(await metrics.scrape()),
        'the gauge back to 0 once caught up', 3000);
    } finally {
      release?.();
      await sub.close();
    }
  });

  test('a gateway that lags past the downlink max age counts what it lost and is told (onTrimmed)', async () => {
    const prefix = `dlag${++n}:`;
    const [gateway, logic] = [bus(prefix, 'gw-1'), bus(prefix, 'logic-1')];
    const key = `${prefix}down:gw-1`;
    const told: number[] = [];
    let stalled = false;
    const got: number[] = [];
    const sub = gateway.consumeDown('gw-1', (batch) => {
      got.push(...batch.map(connOf));
      if (stalled) return;
      stalled = true;
      // This process is stuck (its event loop blocked) for 2 s while 20 entries are written to its stream from outside.
      const started = Date.now();
      const script = Array.from({ length: 20 }, () => `XADD ${key} * d never-read`).join('\n');
      const r = spawnSync('redis-cli', ['-p', String(redis.port)], { input: script });
      assert.equal(r.status, 0);
      while (Date.now() - started < 2000) { /* stuck */ }
    }, { broadcast: false, onTrimmed: (entries) => told.push(entries) });
    try {
      await sleep(300);
      await logic.publishDown('gw-1', reply(1));
      await waitFor(() => told.length > 0, 'the loss reported');
      assert.deepEqual(told, [20]);
      assert.equal(gateway.counters.downTrimmedUnread, 20);
      await logic.publishDown('gw-1', reply(2));
      await waitFor(() => got.includes(2), 'later replies still arrive');
      assert.deepEqual(got, [1, 2], 'none of the trimmed ones was handed on');
    } finally {
      await sub.close();
    }
  });

  test('traffic read in time loses nothing under a 1 s max age, both ways', async () => {
    const prefix = `steady${++n}:`;
    const [gateway, logic] = [bus(prefix, 'gw-1', { shards: 4 }), bus(prefix, 'logic-1', { shards: 4 })];
    const handled: string[] = [];
    const got: number[] = [];
    const up = logic.consumeUp(async (batch) => {
      handled.push(...batch.map(tagOf));
      // Each request answered down, like logic does.
      for (const m of batch) void logic.publishDown('gw-1', reply(Number(tagOf(m).slice(1))));
    });
    const downSub = gateway.consumeDown('gw-1', (batch) => got.push(...batch.map(connOf)));
    try {
      await sleep(300);
      const total = 600;
      for (let i = 0; i < total; i++) {
        await gateway.publishUp(upMessage(`r${i}`, 200));
        if (i % 20 === 19) await sleep(100); // ~200/s for 3 s: older entries age out meanwhile
      }
      await waitFor(() => handled.length === total && got.length === total, () => `all handled and answered (${handled.length}, ${got.length})`);
      assert.equal(new Set(handled).size, total, 'each request handled once');
      assert.deepEqual([...got].sort((a, b) => a - b), Array.from({ length: total }, (_, i) => i), 'each answer once');
      assert.equal(logic.counters.upTrimmedUnprocessed, 0);
      assert.equal(gateway.counters.downTrimmedUnread, 0);
      // And the streams were trimmed meanwhile: they hold about the last second, not the 3 s written.
      const upKept = (await Promise.all([0, 1, 2, 3].map((s) => raw.xlen(`${prefix}up:${s}`)))).reduce((a, b) => a + b, 0);
      assert.ok(upKept < total * 0.7, `uplink keeps ${upKept} of ${total}`);
    } finally {
      await up.close();
      await downSub.close();
    }
  });

  test('a turn published for a gateway is split into entries of ~64 KiB, read back whole and in order', async () => {
    const small = [reply(1), reply(2), reply(3)];
    const one = packDown(small);
    assert.equal(one.length, 1);
    assert.equal(one[0]!.toString('hex'), Buffer.from(toBinary(DownBatchSchema, create(DownBatchSchema, { messages: small }))).toString('hex'),
      'the same bytes as the DownBatch encoding');
    const large = Array.from({ length: 10 }, (_, i) => reply(i, 20_000));
    const packed = packDown(large);
    assert.ok(packed.length >= 3, `${packed.length} entries`);
    assert.ok(packed.every((e) => e.length <= DOWN_ENTRY_BYTES));
    const huge = packDown([reply(1, 100_000)]);
    assert.equal(huge.length, 1, 'a message larger than the cap goes alone');

    const prefix = `split${++n}:`;
    const [gateway, logic] = [bus(prefix, 'gw-1'), bus(prefix, 'logic-1')];
    const got: Down[] = [];
    const sub = gateway.consumeDown('gw-1', (batch) => got.push(...batch));
    try {
      await sleep(300);
      const before = logic.counters.downPublished;
      await Promise.all(large.map((m) => logic.publishDown('gw-1', m)));
      await waitFor(() => got.length === large.length, 'every message');
      assert.equal(logic.counters.downPublished - before, packed.length);
      const hex = (m: Down) => Buffer.from(toBinary(DownSchema, m)).toString('hex');
      assert.deepEqual(got.map(hex), large.map(hex));
    } finally {
      await sub.close();
    }
  });

  test('the bounds are settings (LONGLINK_BUS_*), with defaults', () => {
    const d = loadServerConfig({}, {});
    assert.equal(d.busUpMaxLength, 200_000);
    assert.equal(d.busDownMaxLength, 20_000);
    assert.equal(d.busUpMaxAgeMs, 600_000);
    assert.equal(d.busDownMaxAgeMs, 30_000);
    assert.equal(d.busUpMaxBytes, 64 * 1024 * 1024);
    assert.equal(d.busDownMaxBytes, 64 * 1024 * 1024);
    assert.equal(DEFAULTS.busDownMaxAgeMs, 30_000);
    const c = loadServerConfig({}, {
      LONGLINK_BUS_UP_MAX_LENGTH: '50000', LONGLINK_BUS_DOWN_MAX_LENGTH: '5000', LONGLINK_BUS_UP_MAX_AGE_MS: '60000',
      LONGLINK_BUS_DOWN_MAX_AGE_MS: '10000', LONGLINK_BUS_UP_MAX_BYTES: String(2 ** 25), LONGLINK_BUS_DOWN_MAX_BYTES: String(2 ** 24),
    });
    assert.deepEqual([c.busUpMaxLength, c.busDownMaxLength, c.busUpMaxAgeMs, c.busDownMaxAgeMs, c.busUpMaxBytes, c.busDownMaxBytes],
      [50_000, 5000, 60_000, 10_000, 2 ** 25, 2 ** 24]);
    assert.throws(() => loadServerConfig({}, { LONGLINK_BUS_DOWN_MAX_AGE_MS: '10' }), /LONGLINK_BUS_DOWN_MAX_AGE_MS/);
  });
});

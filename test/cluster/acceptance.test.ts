// Issue 4's acceptance, from outside, through the real binary: 2 gateways and
// 2 logic processes on Redis and PostgreSQL; bob listens on gateway 2, alice
// sends 500 through gateway 1, and the logic process that owns their
// conversation is killed with SIGKILL halfway. Bob must print the 500, in
// order, once each. In both routing modes, with the default rate limits.
// Alice sends at 100/s, so half the stream is still to come at the kill.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { run, type Proc } from '../cli/cli-helpers.js';
import { startTestCluster } from './helpers.js';
import { shardOf } from '../../src/engines/bus-redis.js';

const COUNT = 500;
const SHARDS = 8;

for (const routing of ['targeted', 'broadcast'] as const) {
  describe(`acceptance (${routing})`, () => {
    test(`bob on gw-2 prints all ${COUNT} of alice's messages sent through gw-1, once each and in order, though a logic process is SIGKILLed halfway`, async () => {
      const cluster = await startTestCluster({
        routing,
        shards: SHARDS,
        leaseMs: 3000,
        env: { LONGLINK_RATE_LIMIT: '200', LONGLINK_RATE_BURST: '400', LONGLINK_PING_INTERVAL_MS: '25000' },
      });
      const redis = new Redis(cluster.redis.url);
      const procs: Proc[] = [];
      const cli = (args: string[]) => {
        const p = run(args, { LONGLINK_ADMIN_KEY: cluster.adminKey });
        procs.push(p);
        return p;
      };
      try {
        const [gw1, gw2] = [cluster.node('gw-1'), cluster.node('gw-2')];
        const [alice, bob] = [`alice-${routing}`, `bob-${routing}`];
        const listen = cli(['listen', '--server', cluster.node('logic-2').httpUrl, '--gateway', gw2.tcpUrl!, '--user', bob]);
        // Status lines (online, synced) go to stderr; messages to stdout.
        const status = (type: string) => listen.errLines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; node?: string })
          .filter((o) => o.type === type);
        await listen.waitFor(() => status('synced').length > 0, 15_000, 'bob online');
        assert.equal(status('online')[0]?.node, 'gw-2');

        const send = cli([
          'send', '--server', cluster.node('logic-1').httpUrl, '--gateway', gw1.tcpUrl!,
          '--user', alice, '--to', bob, '--text', 'm', '--count', String(COUNT), '--rate', '100', '--timeout', '90',
        ]);
        await send.waitFor(() => send.json('ack').length >= COUNT / 2 || send.exitCode !== null, 60_000, 'half the acks');

        // SIGKILL the logic process that owns the conversation's shard, so the kill matters.
        const conversation = [alice, bob].sort().join(':');
        const owner = await redis.get(`ll:lease:${shardOf(`u:${conversation}`, SHARDS)}`);
        assert.ok(owner === 'logic-1' || owner === 'logic-2', `a logic node owns the shard (got ${owner})`);
        await cluster.kill(owner, 'SIGKILL');

        assert.equal(await send.exited, 0, `every send acked\n${send.errLines.slice(-5).join('\n')}\n${cluster.logs()}`);
        const acks = send.json<{ seq: number; duplicate: boolean }>('ack');
        assert.equal(acks.length, COUNT, `stdout lines ${send.lines.length}; non-ack: ${send.lines.filter((l) => !l.includes('"ack"')).slice(0, 5).join(' | ')}; stderr: ${send.errLines.slice(-5).join(' | ')}`);

        await listen.waitFor(() => listen.json('message').length >= COUNT, 60_000, `${COUNT} messages at bob`);
        await new Promise((r) => setTimeout(r, 500)); // a late duplicate would show up here
        const got = listen.json<{ text: string; seq: number; from: string }>('message');
        const texts = got.map((m) => m.text);
        const wanted = Array.from({ length: COUNT }, (_, i) => `m-${i + 1}`);
        const first = wanted.findIndex((t, i) => texts[i] !== t);
        // On a failure, what is needed to tell where the order broke: the seqs alice was acked
        // with around it (a resend after a refusal? a duplicate?), what her client and the nodes said.
        // And the order the uplink stream holds alice's sends around it in (the gateway's publishes, resends included):
        // reversed there, the client or the gateway reordered them; in order there, the consumer did.
        const streamed = first < 0 ? [] : await redis.xrangeBuffer(`ll:up:${shardOf(`u:${conversation}`, SHARDS)}`, '-', '+').then((entries) => entries
          .flatMap(([id, fields]) => {
            // The text is the frame's `m-N` after its length byte (a client_msg_id's `…m-N` follows a letter or digit).
            const n = fields.map((f) => f.toString('latin1').match(/(?:^|[^a-z0-9])m-(\d+)(?!\d)/)?.[1]).find((x) => x !== undefined);
            return n !== undefined && Math.abs(Number(n) - (first + 1)) <= 3 ? [`${id.toString()} m-${n}`] : [];
          }), (err: unknown) => [`unreadable: ${String(err)}`]);
        const around = first < 0 ? '' : [
          `first difference at ${first}: bob got ${JSON.stringify(got.slice(Math.max(0, first - 2), first + 3))}`,
          `the uplink stream around it: ${streamed.join(', ')}`,
          `alice's acks there: ${JSON.stringify(acks.slice(Math.max(0, first - 2), first + 3))}`,
          `alice's stderr: ${send.errLines.slice(-10).join(' | ')}`,
          `nodes: ${cluster.logs().split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-20).join('\n')}`,
        ].join('\n');
        assert.deepEqual(texts, wanted, `all 500, once each, in order\n${around}`);
        assert.ok(got.every((m) => m.from === alice));
        assert.deepEqual(got.map((m) => m.seq), acks.map((a) => a.seq), 'bob sees the seqs alice was acked with');
        assert.equal(await redis.get(`ll:lease:${shardOf(`u:${conversation}`, SHARDS)}`), owner === 'logic-1' ? 'logic-2' : 'logic-1',
          'the survivor took the shard over');
      } finally {
        await Promise.all(procs.map((p) => p.kill('SIGKILL')));
        redis.disconnect();
        await cluster.stop();
      }
    });
  });
}

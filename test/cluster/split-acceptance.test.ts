// The split layout's acceptance, from outside, through the real binary and
// the CLI: `longlink gateway` ×2 and `longlink auth`, `message`, `group`,
// `storage`, `risk` each as its own process on Redis and PostgreSQL. A group
// chat and a 1:1 chat work; with `group` killed, 1:1 messages are still acked
// and delivered; restarted, group operations work again; `storage` killed and
// restarted, a listener that reconnects syncs everything it missed; the risk
// process's /metrics shows its consumer lag back at 0.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { run, type Proc } from '../cli/cli-helpers.js';
import { SPLIT } from '../../src/dev/cluster.js';
import { startTestCluster, until } from './helpers.js';

describe('acceptance: the split layout through the CLI', () => {
  test('group and 1:1 chat; group down → 1:1 goes on; group back → group operations; storage restarted → a reconnecting listener syncs what it missed; risk lag back to 0', { timeout: 240_000 }, async () => {
    const cluster = await startTestCluster({ routing: 'targeted', logic: 0, services: SPLIT, env: { LONGLINK_RATE_LIMIT: '200', LONGLINK_RATE_BURST: '400' } });
    const procs: Proc[] = [];
    const cli = (args: string[]) => {
      const p = run(args, { LONGLINK_ADMIN_KEY: cluster.adminKey });
      procs.push(p);
      return p;
    };
    const api = cluster.node('auth-1').httpUrl;
    const [gw1, gw2] = [cluster.node('gw-1'), cluster.node('gw-2')];
    /** A CLI command run to its end: its stdout lines as JSON. */
    const done = async (args: string[]) => {
      const p = cli(args);
      const code = await p.exited;
      assert.equal(code, 0, `longlink ${args.join(' ')}\n${p.errLines.slice(-5).join('\n')}\n${cluster.logs()}`);
      return p.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    };
    const listen = () => {
      const p = cli(['listen', '--server', api, '--gateway', gw2.tcpUrl!, '--user', 'bob']);
      return p;
    };
    const texts = (p: Proc) => p.json<{ text: string }>('message').map((m) => m.text);
    try {
      let bob = listen();
      await bob.waitFor(() => bob.errLines.some((l) => l.includes('"synced"')), 20_000, 'bob online and synced');

      // A group chat and a 1:1 chat.
      const [created] = await done(['group', 'create', '--server', api, '--gateway', gw1.tcpUrl!, '--user', 'alice', '--name', 'team', '--members', 'bob']);
      const groupId = String(created!.group);
      assert.ok(groupId && groupId !== 'undefined', `the group's id: ${JSON.stringify(created)}`);
      await done(['send', '--server', api, '--gateway', gw1.tcpUrl!, '--user', 'alice', '--group', groupId, '--text', 'hello team']);
      await done(['send', '--server', api, '--gateway', gw1.tcpUrl!, '--user', 'alice', '--to', 'bob', '--text', 'hello bob']);
      await bob.waitFor(() => texts(bob).includes('hello team') && texts(bob).includes('hello bob'), 20_000, 'both at bob');

      // group down: 1:1 messages are still acked and delivered.
      await cluster.kill('group-1', 'SIGKILL');
      const acks = await done(['send', '--server', api, '--gateway', gw1.tcpUrl!, '--user', 'alice', '--to', 'bob', '--text', 'group is down', '--count', '5']);
      assert.equal(acks.filter((l) => l.type === 'ack').length, 5, 'every send acked');
      await bob.waitFor(() => texts(bob).filter((t) => t.startsWith('group is down')).length === 5, 20_000, '1:1 delivered with group down');

      // group back: group operations work again.
      await cluster.restart('group-1');
      const [info] = await done(['group', 'add', '--server', api, '--gateway', gw1.tcpUrl!, '--user', 'alice', '--group', groupId, '--members', 'carol']);
      assert.ok(JSON.stringify(info).includes('carol'), `carol added: ${JSON.stringify(info)}`);

      // storage down and back: a listener that reconnects syncs everything it missed.
      await bob.kill('SIGTERM');
      await cluster.kill('storage-1', 'SIGKILL');
      await done(['send', '--server', api, '--gateway', gw1.tcpUrl!, '--user', 'alice', '--to', 'bob', '--text', 'missed', '--count', '10']);
      await done(['send', '--server', api, '--gateway', gw1.tcpUrl!, '--user', 'alice', '--group', groupId, '--text', 'missed in the group']);
      await cluster.restart('storage-1');
      bob = listen();
      const missed = [...Array.from({ length: 10 }, (_, i) => `missed-${i + 1}`), 'missed in the group'];
      await bob.waitFor(() => missed.every((t) => texts(bob).includes(t)), 45_000, 'what bob missed, synced');
      assert.deepEqual(texts(bob).filter((t) => t.startsWith('missed-')), missed.slice(0, 10), 'in order, once each');
      assert.equal(texts(bob).filter((t) => t === 'missed in the group').length, 1);

      // risk: its lag (seen on its own /metrics) back at 0.
      const risk = cluster.node('risk-1').httpUrl;
      let lag = '';
      await until(async () => {
        const body = await (await fetch(`${risk}/metrics`)).text();
        lag = body.split('\n').find((l) => l.startsWith('longlink_consumer_lag{group="risk"}')) ?? '';
        return lag.endsWith(' 0');
      }, 20_000, () => `risk lag: ${lag}`);
    } finally {
      await Promise.all(procs.map((p) => p.kill('SIGKILL')));
      await cluster.stop();
    }
  });
});

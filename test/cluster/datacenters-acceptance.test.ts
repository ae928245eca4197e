// Issue 18's acceptance, from outside, through the real binary:
// `longlink cluster --dcs 2 --status FILE` (in `replicated` acknowledgement
// mode) starts datacenters a and b 20 ms apart; alice, whose client is
// given a's API then b's, and bob, given b's then a's, exchange 200 messages
// each way with `longlink send` and `longlink listen`, every one delivered once
// in order; then every process of a (its Redis and PostgreSQL included, pids
// from the status file) is killed while alice keeps sending, the operator
// fails a over to b (`longlink dc failover a`), alice's client reconnects to b
// by itself, and every message she got an ack for reaches bob once, in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type Proc } from '../cli/cli-helpers.js';

interface Status {
  datacenters: { name: string; api_url: string; pids: Record<string, number> }[];
}

test('two datacenters from the CLI: 200 each way in order; all of a killed while alice sends; she goes on through b, and bob gets every acked message once, in order',
  { timeout: 300_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'longlink-dcs-'));
    const statusFile = join(dir, 'status.json');
    const procs: Proc[] = [];
    const env = { LONGLINK_DC_ACK: 'replicated' };
    const cluster = run(['cluster', '--dcs', '2', '--base-port', '0', '--status', statusFile], env);
    procs.push(cluster);
    try {
      await cluster.waitFor(() => cluster.lines.some((l) => l.includes('export LONGLINK_ADMIN_KEY=')) || cluster.exitCode !== null, 120_000, 'the datacenters up');
      assert.ok(existsSync(statusFile), `the status file\n${cluster.errLines.slice(-20).join('\n')}`);
      const status = JSON.parse(readFileSync(statusFile, 'utf8')) as Status;
      const [a, b] = [status.datacenters.find((d) => d.name === 'a')!, status.datacenters.find((d) => d.name === 'b')!];
      const adminKey = cluster.lines.find((l) => l.includes('export LONGLINK_ADMIN_KEY='))!.split('=')[1]!.trim();
      const cli = (args: string[]) => {
        const p = run(args, { ...env, LONGLINK_ADMIN_KEY: adminKey });
        procs.push(p);
        return p;
      };
      const alicesApis = `${a.api_url},${b.api_url}`;
      const bobsApis = `${b.api_url},${a.api_url}`;
      const bobListens = cli(['listen', '--server', bobsApis, '--user', 'bob']);
      const aliceListens = cli(['listen', '--server', alicesApis, '--user', 'alice']);
      for (const l of [bobListens, aliceListens]) {
        await l.waitFor(() => l.errLines.some((x) => x.includes('"synced"')), 30_000, 'online');
      }

      // 200 each way, at the same time.
      const toBob = cli(['send', '--server', alicesApis, '--user', 'alice', '--to', 'bob', '--text', 'ab', '--count', '200', '--rate', '100', '--timeout', '120']);
      const toAlice = cli(['send', '--server', bobsApis, '--user', 'bob', '--to', 'alice', '--text', 'ba', '--count', '200', '--rate', '100', '--timeout', '120']);
      assert.equal(await toBob.exited, 0, toBob.errLines.slice(-5).join('\n'));
      assert.equal(await toAlice.exited, 0, toAlice.errLines.slice(-5).join('\n'));
      const texts = (l: Proc, prefix: string) => l.json<{ text: string }>('message').map((m) => m.text).filter((t) => t.startsWith(prefix));
      const wanted = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i + 1}`);
      await bobListens.waitFor(() => texts(bobListens, 'ab-').length >= 200, 60_000, 'bob gets 200');
      await aliceListens.waitFor(() => texts(aliceListens, 'ba-').length >= 200, 60_000, 'alice gets 200');
      assert.deepEqual(texts(bobListens, 'ab-'), wanted('ab', 200), 'bob: 200 from alice, once each, in order');
      assert.deepEqual(texts(aliceListens, 'ba-'), wanted('ba', 200), 'alice: 200 from bob, once each, in order');

      // Alice keeps sending; all of a dies under her; the operator fails a over to b.
      aliceListens.child.kill('SIGKILL'); // her listener is in a too; only her sender matters from here
      const more = cli(['send', '--server', alicesApis, '--user', 'alice', '--to', 'bob', '--text', 'late', '--count', '150', '--rate', '25', '--timeout', '120']);
      await more.waitFor(() => more.json('ack').length >= 40 || more.exitCode !== null, 60_000, 'alice sending');
      for (const pid of Object.values(a.pids)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
      const failover = cli(['dc', 'failover', 'a', '--server', b.api_url]);
      assert.equal(await failover.exited, 0, failover.errLines.join('\n'));
      assert.equal(await more.exited, 0, `every send acked in the end\n${more.errLines.slice(-5).join('\n')}`);
      const acked = more.json<{ seq: number }>('ack');
      assert.equal(acked.length, 150);
      await bobListens.waitFor(() => texts(bobListens, 'late-').length >= 150, 60_000, 'bob gets the 150');
      await new Promise((r) => setTimeout(r, 500)); // a late duplicate would show here
      assert.deepEqual(texts(bobListens, 'late-'), wanted('late', 150), 'bob: every message alice got an ack for, once each, in order');
    } finally {
      for (const p of procs.reverse()) await p.kill('SIGTERM').catch(() => null);
      rmSync(dir, { recursive: true, force: true });
    }
  });

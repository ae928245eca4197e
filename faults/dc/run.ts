// npm run faults -- --dcs 2 [--quick] [--json] [--ack replicated|local|both]:
// the faults of several datacenters (faults/dc/scenarios.ts) on two
// datacenters of this machine joined by 20 ms links, once per
// acknowledgement mode: b's sync process SIGKILLed and started again, the
// link cut for 30 s (--quick: 10 s) and healed (neither takes the other's
// homes over: each renews its lease at the witness), then all of datacenter a
// killed under load and failed over to b by b itself (a's lease at the
// witness ran out), started again and handed its homes back. A row fails when it loses, repeats or reorders an
// acked message in `replicated` mode, repeats or reorders one in `local` mode
// (whose loss is the replication lag: measured, reported, not failed), or
// leaves the two stores different.
import { startDatacenters } from '../../src/dev/datacenters.js';
import { dcLoss, linkCut, syncKill, type DcVerdict } from './scenarios.js';

/** A datacenter unheard this long, its lease at the witness run out, is failed over by the other on its own. */
const FAILOVER_AFTER_MS = 5000;

function progress(message: string): void {
  process.stderr.write(`[faults ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

export function failedDc(v: DcVerdict): boolean {
  return v.duplicated > 0 || v.reordered > 0 || v.storeDiffs > 0 || (v.ack === 'replicated' && v.lost > 0) || (v.homesMoved?.length ?? 0) > 0;
}

function table(rows: DcVerdict[]): string {
  const head = ['fault', 'ack', 'acked', 'lost', 'dup', 'reord', 'store_diffs', 'homes_moved', 'loss_window_ms', 'recovery_ms', 'orphaned', 'verdict'];
  const lines = rows.map((v) => [v.fault, v.ack, v.acked, v.lost, v.duplicated, v.reordered, v.storeDiffs, v.homesMoved?.join(',') || '-',
    v.lossWindowMs ?? '-', v.recoveryMs ?? '-', v.failback?.orphaned ?? '-', failedDc(v) ? 'FAIL' : 'ok'].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  return [head, ...lines].map((l) => l.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n');
}

export async function runDcFaults(argv: readonly string[]): Promise<number> {
  const quick = argv.includes('--quick');
  const json = argv.includes('--json');
  const ackAt = argv.indexOf('--ack');
  const ack = ackAt >= 0 ? argv[ackAt + 1] : 'both';
  if (ack !== 'both' && ack !== 'replicated' && ack !== 'local') throw new Error('--ack must be replicated, local or both');
  const dcsAt = argv.indexOf('--dcs');
  if (argv[dcsAt + 1] !== '2') throw new Error('--dcs 2 is the layout these faults run on');
  const modes: DcVerdict['ack'][] = ack === 'both' ? ['replicated', 'local'] : [ack];
  const rows: DcVerdict[] = [];
  for (const mode of modes) {
    progress(`starting two datacenters (a, b; 20 ms each way between them), acknowledgement mode ${mode}`);
    const dcs = await startDatacenters({
      names: ['a', 'b'], delayMs: 20, gateways: 1, logic: 1, services: { sync: 1 }, routing: 'targeted',
      shards: 8, leaseMs: 3000, nodeTtlMs: 3000, durable: true, witness: true,
      env: { LONGLINK_DC_ACK: mode, LONGLINK_DC_FAILOVER_AFTER_MS: String(FAILOVER_AFTER_MS), LONGLINK_GROUP_ADD_POLICY: 'anyone', LONGLINK_PING_INTERVAL_MS: '1000', LONGLINK_RATE_LIMIT: '5000', LONGLINK_RATE_BURST: '10000' },
      onLine: () => undefined,
    });
    try {
      rows.push(await syncKill(dcs, mode, progress));
      progress(JSON.stringify(rows.at(-1)));
      rows.push(await linkCut(dcs, mode, quick ? 10_000 : 30_000, progress));
      progress(JSON.stringify(rows.at(-1)));
      rows.push(await dcLoss(dcs, mode, progress, 'witness'));
      progress(JSON.stringify(rows.at(-1)));
    } finally {
      await dcs.stop();
    }
  }
  if (json) process.stdout.write(`${JSON.stringify({ layout: 'two datacenters, 20 ms apart', faults: rows }, null, 2)}\n`);
  else process.stdout.write(`layout: two datacenters (a, b), each 1 gateway, 1 logic, 1 sync, its own Redis and PostgreSQL; 20 ms each way between them; a witness Redis; failover after ${FAILOVER_AFTER_MS} ms unheard\n${table(rows)}\n`);
  return rows.some(failedDc) ? 1 : 0;
}

// Message retention: messages (and timeline events) stored more than
// LONGLINK_RETENTION_DAYS ago are removed, a bounded batch at a time, so the
// store does not grow forever. What stays consistent is the store's part
// (store.ts, "Retention"): seqs go on, cursors stay, each conversation
// remembers the first seq it still holds, and sync jumps over what expired
// (reads.ts). Logs counts only, never a message's text.
//
// The embedded server runs one (roles/embedded.ts); a cluster may run one per
// logic node: the PostgreSQL store lets one batch run at a time, the others
// find nothing to do.
//
// A store that partitions messages by storage order (PostgreSQL) expires a
// partition at a time instead (store.ts, "Retention"): no row is deleted, a
// partition is dropped whole once everything in it is due. Partitions span
// an eighth of the retention period (at least an hour), so about nine are
// kept, and a message lives at most that eighth longer than the period.
import { DEFAULTS, type ServerConfig } from '../config.js';
import type { MessageStore } from '../engines/store.js';
import { log as rootLog } from '../observability/log.js';

const logger = rootLog.child({ component: 'retention' });

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

export interface RetentionOptions {
  /** Days a message is kept; 0 keeps everything (start() does nothing). */
  days: number;
  /** A pass every this many ms. @default DEFAULTS.retention.intervalMs (60 s) */
  intervalMs?: number;
  /** Messages per store call. @default DEFAULTS.retention.batch (1000) */
  batch?: number;
  /** Store calls per pass at most (the rest waits for the next pass). @default DEFAULTS.retention.maxBatchesPerPass */
  maxBatchesPerPass?: number;
  /** The clock (tests move it instead of waiting days). @default Date.now */
  now?: () => number;
  /** A store that partitions messages starts a new partition this often. @default an eighth of `days`, at least an hour */
  partitionSpanMs?: number;
}

/** What one pass did. */
export interface RetentionPass {
  /** Messages and events removed. */
  removed: number;
  /** Store calls made. */
  batches: number;
  /** Messages stored before this (ms since the epoch) were due. */
  cutoffMs: number;
  /** The pass stopped at maxBatchesPerPass with more due: the next pass goes on. */
  more: boolean;
}

export class Retention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RetentionPass> | undefined;
  private stopped = false;
  private readonly intervalMs: number;
  private readonly batch: number;
  private readonly maxBatchesPerPass: number;
  private readonly now: () => number;
  private readonly spanMs: number;

  constructor(
    private readonly options: RetentionOptions,
    private readonly deps: { store: Pick<MessageStore, 'expireBefore'> & Partial<Pick<MessageStore, 'expireByPartition'>> },
  ) {
    this.spanMs = options.partitionSpanMs ?? Math.max(HOUR_MS, Math.floor((options.days * DAY_MS) / 8));
    this.intervalMs = options.intervalMs ?? DEFAULTS.retention.intervalMs;
    this.batch = Math.max(1, Math.floor(options.batch ?? DEFAULTS.retention.batch));
    this.maxBatchesPerPass = Math.max(1, Math.floor(options.maxBatchesPerPass ?? DEFAULTS.retention.maxBatchesPerPass));
    this.now = options.now ?? Date.now;
  }

  /** On when days > 0. */
  get enabled(): boolean {
    return this.options.days > 0;
  }

  /** A pass every intervalMs (none when days is 0). Idempotent. */
  start(): void {
    if (!this.enabled || this.timer || this.stopped) return;
    logger.info({ days: this.options.days, interval_ms: this.intervalMs }, 'retention on');
    this.timer = setInterval(() => {
      void this.runOnce().catch(() => undefined); // logged in pass()
    }, this.intervalMs);
    this.timer.unref();
  }

  /**
   * One pass now (or the one running): store calls until one removes fewer
   * than a batch, at most maxBatchesPerPass of them. Nothing when days is 0.
   * A failure is logged and rethrown; the next pass tries again.
   */
  runOnce(): Promise<RetentionPass> {
    if (!this.enabled) return Promise.resolve({ removed: 0, batches: 0, cutoffMs: 0, more: false });
    const pass = (this.running ??= this.pass().finally(() => {
      this.running = undefined;
    }));
    return pass;
  }

  /** No more passes; waits for the one running. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  private async pass(): Promise<RetentionPass> {
    const cutoffMs = this.now() - this.options.days * DAY_MS;
    let removed = 0;
    let batches = 0;
    let more = false;
    try {
      for (;;) {
        if (this.stopped) break;
        if (batches === this.maxBatchesPerPass) {
          more = true;
          break;
        }
        // A step of retention by partition, or (a store without partitions) a batch of rows.
        const store = this.deps.store;
        const step = store.expireByPartition ? await store.expireByPartition(cutoffMs, this.spanMs, this.batch) : undefined;
        const n = step ? step.removed : await store.expireBefore(cutoffMs, this.batch);
        batches++;
        removed += n;
        if (step ? !step.more : n < this.batch) break;
        // Let other work in between batches (the embedded store's transactions run on this thread).
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      logger.warn({ err, removed, batches, cutoff_ms: cutoffMs }, 'retention pass failed; the next pass goes on');
      throw err;
    }
    if (removed > 0) logger.info({ removed, batches, cutoff_ms: cutoffMs, more }, 'expired messages removed');
    return { removed, batches, cutoffMs, more };
  }
}

/** The retention a role runs, from its configuration (off when retentionDays is 0). */
export function retentionFor(
  config: Pick<ServerConfig, 'retentionDays'>, store: Pick<MessageStore, 'expireBefore'> & Partial<Pick<MessageStore, 'expireByPartition'>>,
  overrides: Omit<RetentionOptions, 'days'> = {},
): Retention {
  return new Retention({ ...overrides, days: config.retentionDays }, { store });
}

// In-process bus for a single node (`longlink start`). One queue for uplink,
// drained in batches by the single consumer; one queue per node for
// downlink. Messages pass as objects (nothing to encode in one process).
// Nothing survives a restart — nor needs to: the SendAck is only sent after
// the store has the message, and clients resend what wasn't acked. The
// committed stream is a queue per consumer group, from when the group first
// subscribed (what was published before no group of that name existed is
// not kept), drained one batch at a time in publish order. Dead
// letters are kept in memory too (the newest 10,000), for `longlink dead`.
import { operationName } from '../protocol/operations.js';
import { isUnavailable } from './store.js';
import { log as rootLog } from '../observability/log.js';
import {
  ALL_GATEWAYS, SeenWindow, UP_SERVICES, newBusCounters,
  type Bus, type Committed, type CommittedHandler, type ConsumeDownOptions, type ConsumeUpOptions, type DeadLetterInfo, type DeadLetters, type Down, type DownHandler, type Subscription,
  type UpEnvelope, type UpHandler,
} from './bus.js';

const log = rootLog.child({ component: 'bus' });

export interface MemoryBusOptions {
  /** Largest batch handed to the uplink consumer. @default 512 */
  maxBatch?: number;
  /** Uplink messages waiting for logic before publishUp refuses more (backpressure). @default 100000 */
  maxBacklog?: number;
  /** Handler failures of one entry (not counting an unavailable store) before it is dead-lettered. @default 5 */
  maxDeliveries?: number;
  /** Longest pause between tries of a batch while the store is unavailable (the pause doubles from 100 ms). @default 2000 */
  unavailablePauseMaxMs?: number;
  /** Bytes of message text a committed-stream group may have waiting (a consumer that keeps failing: a webhook receiver away) before its oldest are dropped. @default 64 MiB */
  maxCommittedBytes?: number;
}

/** publishUp refused: logic is too far behind. The gateway answers UNAVAILABLE; clients retry. */
export class BusFullError extends Error {}

const MAX_DEAD = 10_000;

/** What a committed entry weighs in a group's queue: its text, and a fixed cost for the rest. */
function entryBytes(e: Committed): number {
  return 256 + (e.message?.text.length ?? 0) * 2;
}

/** One consumer group of the committed stream. */
interface CommittedGroup {
  queue: Committed[];
  /** Bytes of text (and a fixed cost per entry) in `queue`. */
  bytes: number;
  handler?: CommittedHandler;
  draining: boolean;
  seen: SeenWindow;
  counters: Map<string, number>;
}

interface Lane {
  queue: Down[];
  handler?: DownHandler;
  broadcast: boolean;
  scheduled: boolean;
}

export class MemoryBus implements Bus {
  private readonly maxBatch: number;
  private readonly maxBacklog: number;
  private readonly maxDeliveries: number;
  private readonly unavailablePauseMaxMs: number;
  private readonly maxCommittedBytes: number;
  private up: UpEnvelope[] = [];
  private upHandler: UpHandler | undefined;
  private draining = false;
  private readonly down = new Map<string, Lane>();
  private closed = false;
  private readonly deadLetters: { info: DeadLetterInfo; envelope: UpEnvelope }[] = [];
  private deadSeq = 0;
  private readonly groups = new Map<string, CommittedGroup>();
  readonly counters = newBusCounters();
  readonly dead: DeadLetters;

  constructor(options: MemoryBusOptions = {}) {
    this.maxBatch = options.maxBatch ?? 512;
    this.maxBacklog = options.maxBacklog ?? 100_000;
    this.maxDeliveries = options.maxDeliveries ?? 5;
    this.unavailablePauseMaxMs = options.unavailablePauseMaxMs ?? 2000;
    this.maxCommittedBytes = options.maxCommittedBytes ?? 64 * 1024 * 1024;
    this.dead = {
      list: async (limit) => this.deadLetters.slice(0, Math.max(0, limit)).map((d) => d.info),
      count: async () => this.deadLetters.length,
      replay: async (ids) => {
        const chosen = ids.length === 0 ? [...this.deadLetters] : this.deadLetters.filter((d) => ids.includes(d.info.id));
        for (const d of chosen) {
          const i = this.deadLetters.indexOf(d);
          if (i < 0) continue; // replayed meanwhile
          this.deadLetters.splice(i, 1);
          this.up.push(d.envelope);
        }
        this.scheduleUp();
        return chosen.map((d) => d.info.id);
      },
    };
  }

  async publishUp(message: UpEnvelope): Promise<void> {
    if (this.closed) throw new Error('bus closed');
    if (this.up.length >= this.maxBacklog) throw new BusFullError(`uplink backlog is full (${this.maxBacklog})`);
    this.counters.upPublished++;
    this.up.push(message);
    this.scheduleUp();
  }

  consumeUp(handler: UpHandler, options: ConsumeUpOptions = {}): Subscription {
    if (this.upHandler) throw new Error('the memory bus has one uplink consumer');
    if (options.services && UP_SERVICES.some((s) => !options.services!.includes(s))) {
      throw new Error('the memory bus has one uplink consumer, for every service');
    }
    this.upHandler = handler;
    this.scheduleUp();
    return {
      close: async () => {
        if (this.upHandler === handler) this.upHandler = undefined;
      },
    };
  }

  async publishCommitted(entries: readonly Committed[]): Promise<void> {
    if (this.closed) throw new Error('bus closed');
    this.counters.committedPublished += entries.length;
    for (const [name, group] of this.groups) {
      for (const e of entries) {
        group.queue.push(e);
        group.bytes += entryBytes(e);
      }
      let lost = 0;
      while (group.queue.length - lost > this.maxBacklog || (group.bytes > this.maxCommittedBytes && group.queue.length - lost > 1)) {
        group.bytes -= entryBytes(group.queue[lost]!);
        lost++;
      }
      if (lost > 0) {
        group.queue.splice(0, lost);
        log.warn({ group: name, entries: lost }, 'committed entries dropped: the consumer group is too far behind');
      }
      this.drainCommitted(group);
    }
  }

  consumeCommitted(name: string, handler: CommittedHandler): Subscription {
    const group = this.committedGroup(name);
    if (group.handler) throw new Error(`the memory bus has one consumer in group ${name}`);
    group.handler = handler;
    this.drainCommitted(group);
    return {
      close: async () => {
        if (group.handler === handler) group.handler = undefined;
      },
    };
  }

  /** One consumer takes every service's requests, in arrival order. */
  readonly splitsServices = false;

  /** One process serves everything. */
  isDown(): boolean {
    return false;
  }

  async recheck(): Promise<void> {}

  async committedCounters(name: string): Promise<Map<string, number>> {
    return new Map(this.groups.get(name)?.counters ?? []);
  }

  async consumerLag(): Promise<Map<string, number>> {
    const lag = new Map<string, number>([['logic', this.up.length]]);
    for (const [name, group] of this.groups) lag.set(name, group.queue.length);
    return lag;
  }

  private committedGroup(name: string): CommittedGroup {
    let group = this.groups.get(name);
    if (!group) {
      group = { queue: [], bytes: 0, draining: false, seen: new SeenWindow(), counters: new Map() };
      this.groups.set(name, group);
    }
    return group;
  }

  /** Hand a group its queue, a batch at a time; a failing batch is tried again a few times, then skipped (logged). */
  private drainCommitted(group: CommittedGroup): void {
    if (group.draining || !group.handler || group.queue.length === 0) return;
    group.draining = true;
    setImmediate(async () => {
      while (group.handler && group.queue.length > 0 && !this.closed) {
        const batch = group.queue.splice(0, this.maxBatch);
        for (const e of batch) group.bytes -= entryBytes(e);
        const fresh = group.seen.unseen(batch);
        this.counters.committedRepeats += batch.length - fresh.length;
        this.counters.committedRead += fresh.length;
        for (let attempt = 1; fresh.length > 0; attempt++) {
          try {
            const effects = await group.handler(fresh);
            for (const [k, v] of Object.entries(effects?.counters ?? {})) group.counters.set(k, (group.counters.get(k) ?? 0) + v);
            group.seen.add(fresh);
            break;
          } catch (err) {
            if (attempt >= this.maxDeliveries) {
              this.counters.committedSkipped += fresh.length;
              log.error({ err, entries: fresh.length }, 'a committed-stream consumer kept failing; entries skipped');
              break;
            }
            await new Promise((r) => setTimeout(r, 100 * attempt));
          }
        }
        await new Promise((r) => setImmediate(r));
      }
      group.draining = false;
      this.drainCommitted(group);
    });
  }

  async publishDown(node: string, message: Down): Promise<void> {
    if (this.closed) return;
    this.counters.downPublished++;
    if (node === ALL_GATEWAYS) {
      for (const [name, lane] of this.down) {
        if (!lane.handler || !lane.broadcast) continue;
        lane.queue.push(message);
        this.scheduleDown(name);
      }
      return;
    }
    const lane = this.lane(node);
    lane.queue.push(message);
    this.scheduleDown(node);
  }

  consumeDown(node: string, handler: DownHandler, options: ConsumeDownOptions = {}): Subscription {
    const lane = this.lane(node);
    lane.handler = handler;
    lane.broadcast = options.broadcast ?? true;
    this.scheduleDown(node);
    return {
      close: async () => {
        if (lane.handler === handler) lane.handler = undefined;
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.upHandler = undefined;
    this.down.clear();
  }

  /** Messages waiting for the uplink consumer (for metrics and tests). */
  get upBacklog(): number {
    return this.up.length;
  }

  private lane(node: string): Lane {
    let lane = this.down.get(node);
    if (!lane) {
      lane = { queue: [], scheduled: false, broadcast: true };
      this.down.set(node, lane);
    }
    return lane;
  }

  private scheduleUp(): void {
    if (this.draining || !this.upHandler || this.up.length === 0) return;
    this.draining = true;
    setImmediate(() => void this.drainUp());
  }

  private async drainUp(): Promise<void> {
    while (this.upHandler && this.up.length > 0) {
      const batch = this.up.length <= this.maxBatch ? this.up : this.up.slice(0, this.maxBatch);
      this.up = this.up.length <= this.maxBatch ? [] : this.up.slice(this.maxBatch);
      this.counters.upRead += batch.length;
      await this.handle(batch);
      // Let sockets breathe between batches, and let more arrive to batch.
      await new Promise((r) => setImmediate(r));
    }
    this.draining = false;
    if (this.up.length > 0) this.scheduleUp();
  }

  /**
   * At least once, in order: an unavailable store is waited out (the same
   * batch again, not counted); any other failure is retried entry by entry,
   * and an entry that keeps failing is dead-lettered alone.
   */
  private async handle(batch: UpEnvelope[]): Promise<void> {
    for (let pause = 100; this.upHandler; pause = Math.min(pause * 2, this.unavailablePauseMaxMs)) {
      try {
        await this.upHandler(batch);
        return;
      } catch (err) {
        if (isUnavailable(err)) {
          log.warn({ reason: (err as Error).message, entries: batch.length }, 'store unavailable; uplink paused');
          await new Promise((r) => setTimeout(r, pause));
          continue;
        }
        if (batch.length > 1) {
          for (const one of batch) await this.handleOne(one);
          return;
        }
        await this.handleOne(batch[0]!, err);
        return;
      }
    }
    this.up = batch.concat(this.up); // the consumer went away: keep them for the next
  }

  private async handleOne(entry: UpEnvelope, firstError?: unknown): Promise<void> {
    let attempts = firstError === undefined ? 0 : 1;
    let last: unknown = firstError;
    while (this.upHandler && attempts < this.maxDeliveries) {
      if (attempts > 0) await new Promise((r) => setTimeout(r, 100 * attempts));
      try {
        await this.upHandler([entry]);
        return;
      } catch (err) {
        last = err;
        if (isUnavailable(err)) {
          await new Promise((r) => setTimeout(r, Math.min(500, this.unavailablePauseMaxMs)));
          continue; // not counted
        }
        attempts++;
      }
    }
    if (!this.upHandler) {
      this.up.unshift(entry);
      return;
    }
    this.counters.deadLettered++;
    const info: DeadLetterInfo = {
      id: String(++this.deadSeq), stream: 'memory', entryId: String(this.deadSeq), partition: entry.partition,
      operation: entry.body.case === 'frame' ? operationName(entry.body.value) : entry.body.case ?? '',
      userId: entry.origin?.userId ?? '', error: String((last as Error | undefined)?.message ?? last).slice(0, 500),
      failedAtMs: Date.now(), attempts,
    };
    log.error({ dead: info }, 'an uplink entry kept failing; moved to the dead letters');
    this.deadLetters.push({ info, envelope: entry });
    if (this.deadLetters.length > MAX_DEAD) this.deadLetters.shift();
  }

  private scheduleDown(node: string): void {
    const lane = this.down.get(node);
    if (!lane || lane.scheduled || !lane.handler || lane.queue.length === 0) return;
    lane.scheduled = true;
    queueMicrotask(() => {
      lane.scheduled = false;
      if (!lane.handler) return;
      const batch = lane.queue;
      lane.queue = [];
      this.counters.downRead += batch.length;
      this.counters.downMessagesRead += batch.length;
      try {
        lane.handler(batch);
      } catch (err) {
        log.error({ err, node }, 'downlink handler failed');
      }
    });
  }
}

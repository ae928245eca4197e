// In-process bus for a single node (`longlink start`). One queue for uplink,
// drained in batches by the single consumer; one queue per gateway for
// downlink. Nothing survives a restart — nor needs to: the SendAck is only
// sent after the store has the message, and clients resend what wasn't acked.
import { ALL_GATEWAYS, newBusCounters, type Bus, type DownHandler, type DownMessage, type Subscription, type UpHandler, type UpMessage } from './bus.js';

export interface MemoryBusOptions {
  /** Largest batch handed to the uplink consumer. @default 512 */
  maxBatch?: number;
  /** Uplink messages waiting for logic before publishUp refuses more (backpressure). @default 100000 */
  maxBacklog?: number;
}

/** publishUp refused: logic is too far behind. The gateway answers UNAVAILABLE; clients retry. */
export class BusFullError extends Error {}

export class MemoryBus implements Bus {
  private readonly maxBatch: number;
  private readonly maxBacklog: number;
  private up: UpMessage[] = [];
  private upHandler: UpHandler | undefined;
  private draining = false;
  private readonly down = new Map<string, { queue: DownMessage[]; handler?: DownHandler; scheduled: boolean }>();
  private closed = false;
  readonly counters = newBusCounters();

  constructor(options: MemoryBusOptions = {}) {
    this.maxBatch = options.maxBatch ?? 512;
    this.maxBacklog = options.maxBacklog ?? 100_000;
  }

  async publishUp(_partitionKey: string, message: UpMessage): Promise<void> {
    if (this.closed) throw new Error('bus closed');
    if (this.up.length >= this.maxBacklog) throw new BusFullError(`uplink backlog is full (${this.maxBacklog})`);
    this.counters.upPublished++;
    this.up.push(message);
    this.scheduleUp();
  }

  consumeUp(handler: UpHandler): Subscription {
    if (this.upHandler) throw new Error('the memory bus has one uplink consumer');
    this.upHandler = handler;
    this.scheduleUp();
    return {
      close: async () => {
        if (this.upHandler === handler) this.upHandler = undefined;
      },
    };
  }

  async publishDown(node: string, message: DownMessage): Promise<void> {
    if (this.closed) return;
    this.counters.downPublished++;
    if (node === ALL_GATEWAYS) {
      for (const [name, lane] of this.down) {
        if (!lane.handler) continue;
        lane.queue.push(message);
        this.scheduleDown(name);
      }
      return;
    }
    const lane = this.lane(node);
    lane.queue.push(message);
    this.scheduleDown(node);
  }

  consumeDown(node: string, handler: DownHandler): Subscription {
    const lane = this.lane(node);
    lane.handler = handler;
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

  private lane(node: string) {
    let lane = this.down.get(node);
    if (!lane) {
      lane = { queue: [], scheduled: false };
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
      try {
        await this.upHandler(batch);
      } catch (err) {
        // At-least-once: put the batch back in front and retry after a pause.
        this.up = batch.concat(this.up);
        console.error('[bus] uplink handler failed; retrying batch', err);
        await new Promise((r) => setTimeout(r, 100));
      }
      // Let sockets breathe between batches, and let more arrive to batch.
      await new Promise((r) => setImmediate(r));
    }
    this.draining = false;
    if (this.up.length > 0) this.scheduleUp();
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
        console.error(`[bus] downlink handler of ${node} failed`, err);
      }
    });
  }
}

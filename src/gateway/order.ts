// One connection's requests in the order it sent them, across services.
//
// On a bus that keeps each service on streams of its own (bus.ts,
// Services), two requests of one connection to different services are
// consumed apart: "remove bob" (group) then "send" (message) in one go could
// be stored send first, and bob would see it. So a connection's request
// waits here while a write it sent earlier to another service, in the same
// partition, has not been answered; a read waits for every earlier write of
// the connection to another service (a connection sees its own writes).
// A request held here holds what must not overtake it: a held write holds
// the connection's later requests of its partition and its later reads; a
// held read holds nothing (it changes nothing). Requests of one service need
// nothing: the bus keeps a partition's order.
//
// Bounds: a write not answered within HOLD_MAX_MS stops holding others up
// (its client has given up on it by then); a connection may have at most
// MAX_HELD requests waiting (past it a request goes up at once, unordered
// rather than refused) and MAX_TRACKED writes unanswered (past it the
// oldest is forgotten).
import type { Service } from '../protocol/operations.js';
import type { Frame } from '../protocol/index.js';

export const HOLD_MAX_MS = 10_000;
export const MAX_HELD = 128;
const MAX_TRACKED = 4096;

/** A request as the ordering sees it. */
export interface Routed {
  frame: Frame;
  service: Service;
  partition: string;
  access: 'read' | 'write';
  requestId: string;
}

interface Sent {
  service: Service;
  partition: string;
  atMs: number;
}

/** One connection's state (on Connection.order). */
export class ConnectionOrder {
  /** Writes sent up and not answered yet, by frame id. */
  private readonly unanswered = new Map<number, Sent>();
  private held: Routed[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly forward: (r: Routed) => void) {}

  /** Send `r` up now, or hold it behind what it must follow. */
  submit(r: Routed): void {
    if (this.held.length < MAX_HELD && (this.behindHeld(r, this.held.length) || this.blocked(r))) {
      this.held.push(r);
      this.timer ??= setTimeout(() => this.onTimer(), HOLD_MAX_MS).unref();
      return;
    }
    this.send(r);
  }

  /** A reply (or error) to frame `id` came down: what waited on it may go. */
  answered(id: number): void {
    if (!this.unanswered.delete(id) || this.held.length === 0) return;
    this.release();
  }

  /** The connection closed. */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.held = [];
    this.unanswered.clear();
  }

  /** Requests waiting (for tests and metrics). */
  get waiting(): number {
    return this.held.length;
  }

  private send(r: Routed): void {
    if (r.access === 'write' && r.frame.id !== 0) {
      this.unanswered.delete(r.frame.id); // a reused id counts from now
      this.unanswered.set(r.frame.id, { service: r.service, partition: r.partition, atMs: Date.now() });
      if (this.unanswered.size > MAX_TRACKED) this.unanswered.delete(this.unanswered.keys().next().value!);
    }
    this.forward(r);
  }

  /** An earlier write to another service that `r` must follow is still unanswered. */
  private blocked(r: Routed): boolean {
    const oldest = Date.now() - HOLD_MAX_MS;
    for (const [id, w] of this.unanswered) {
      if (w.atMs < oldest) {
        this.unanswered.delete(id); // never answered: it holds nothing up any more
        continue;
      }
      if (w.service !== r.service && (r.access === 'read' || w.partition === r.partition)) return true;
    }
    return false;
  }

  /** One of the first `n` held requests is a write `r` must not overtake. */
  private behindHeld(r: Routed, n: number): boolean {
    for (let i = 0; i < n; i++) {
      const h = this.held[i]!;
      if (h.access === 'write' && (r.access === 'read' || h.partition === r.partition)) return true;
    }
    return false;
  }

  /** Send, in order, every held request nothing holds any more. */
  private release(): void {
    const still: Routed[] = [];
    const before = this.held;
    this.held = still;
    for (const r of before) {
      // `still` holds what stays from before r: the same test as at submit.
      if (this.behindHeld(r, still.length) || this.blocked(r)) still.push(r);
      else this.send(r);
    }
    if (still.length === 0) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private onTimer(): void {
    this.timer = undefined;
    this.release();
    if (this.held.length > 0) this.timer = setTimeout(() => this.onTimer(), HOLD_MAX_MS).unref();
  }
}

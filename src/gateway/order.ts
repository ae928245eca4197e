// One connection's requests in the order it sent them, across services.
//
// On a bus that keeps each service on streams of its own (bus.ts,
// Services), two requests of one connection to different services are
// consumed apart: "remove bob" (group) then "send" (message) in one go could
// be stored send first, and bob would see it. So a connection's request
// waits here while a write it sent earlier to another service, in the same
// partition, has not been answered; a read waits for every earlier write of
// the connection to another service (a connection sees its own writes).
// Once one request waits, the connection's later requests wait behind it,
// in order. Requests of one service need nothing: the bus keeps a
// partition's order.
//
// Bounds: a write not answered within HOLD_MAX_MS stops holding others up
// (its client has given up on it by then); a connection may have at most
// MAX_HELD requests waiting (past it the new one is refused BUSY) and
// MAX_TRACKED writes unanswered (past it the oldest is forgotten).
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
  private readonly held: Routed[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly forward: (r: Routed) => void) {}

  /** Send `r` up now, or hold it behind what it must follow. False when too many wait (the caller refuses it). */
  submit(r: Routed): boolean {
    if (this.held.length > 0 || this.blocked(r)) {
      if (this.held.length >= MAX_HELD) return false;
      this.held.push(r);
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        this.release();
      }, HOLD_MAX_MS).unref();
      return true;
    }
    this.send(r);
    return true;
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
    this.held.length = 0;
    this.unanswered.clear();
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
    for (const w of this.unanswered.values()) {
      if (w.atMs < oldest) continue;
      if (w.service !== r.service && (r.access === 'read' || w.partition === r.partition)) return true;
    }
    return false;
  }

  private release(): void {
    while (this.held.length > 0 && !this.blocked(this.held[0]!)) this.send(this.held.shift()!);
    if (this.held.length === 0) {
      clearTimeout(this.timer);
      this.timer = undefined;
    } else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.release();
      }, HOLD_MAX_MS).unref();
    }
  }
}

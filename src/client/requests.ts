// Request/reply matching. Every frame the client writes takes its id from one
// counter, so no two frames of a connection share one; the server echoes a
// request's id on its reply (or on an Error), which settles the waiting
// promise. A request without a reply in time, or whose connection is lost,
// rejects UNAVAILABLE: the caller decides whether to ask again.
import {
  ErrorCode, LonglinkError, makeFrame, type BodyOf, type Frame, type FrameBodyInit, type FrameCase,
} from '../protocol/index.js';

interface Pending {
  resolve: (frame: Frame) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export type RequestBody = FrameBodyInit & { case: string };

/**
 * A write's idempotency key (`Frame.request_id`), chosen once per call: the
 * server applies a write resent with the same key once and answers it as the
 * first time. `randomUUID` exists in Node and in browsers' secure contexts
 * only; `getRandomValues` everywhere (a page served over plain http).
 */
export function newRequestId(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

export class Requests {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(
    /** Writes a frame on the live connection; false when there is none. */
    private readonly write: (frame: Frame) => boolean,
    private readonly timeoutMs: number,
  ) {}

  /** The id of a frame that waits for no reply here (a ping, a typing, a send: the outbox matches its ack). */
  newId(): number {
    return this.nextId++;
  }

  /** Write a request; resolves with the frame that answers it, of any case but Error (which rejects). */
  request(body: RequestBody, requestId = ''): Promise<Frame> {
    const id = this.nextId++;
    const timeoutMs = this.timeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new LonglinkError(ErrorCode.UNAVAILABLE, `no reply to ${body.case} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      const frame = makeFrame(id, body);
      frame.requestId = requestId;
      if (!this.write(frame)) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new LonglinkError(ErrorCode.UNAVAILABLE, 'not connected'));
      }
    });
  }

  /** A request whose reply must be of case `expect`; `requestId` for a write (see `newRequestId`). */
  async call<C extends FrameCase>(body: RequestBody, expect: C, requestId = ''): Promise<BodyOf<C>> {
    const reply = await this.request(body, requestId);
    if (reply.body.case !== expect) throw new LonglinkError(ErrorCode.INTERNAL, `expected ${expect}, got ${reply.body.case ?? 'nothing'}`);
    return reply.body.value as BodyOf<C>;
  }

  /** A reply from the server: settles the request of its id, if one waits. */
  resolve(frame: Frame): void {
    const p = this.pending.get(frame.id);
    if (!p) return;
    this.pending.delete(frame.id);
    clearTimeout(p.timer);
    p.resolve(frame);
  }

  /** An Error about request `id`: rejects it; false when no request waits for it (id 0: about none). */
  reject(id: number, err: LonglinkError): boolean {
    const p = this.pending.get(id);
    if (id === 0 || !p) return false;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.reject(err);
    return true;
  }

  /** The connection is gone: no reply will come on it. */
  failAll(reason: string): void {
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new LonglinkError(ErrorCode.UNAVAILABLE, reason));
    }
    this.pending.clear();
  }
}

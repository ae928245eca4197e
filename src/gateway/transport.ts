// One interface over TCP and WebSocket, so the gateway's session code never
// knows which it is on. An adapter turns its socket's bytes into frame
// payloads and hands them to a sink one at a time; the sink can stop the
// flow (rate limit, login in progress) and the adapter then stops reading
// from the socket, so an abusive client fills its own TCP window, not our memory.
import type { Socket } from 'node:net';
import { lengthPrefixed } from '../protocol/index.js';

/** Encoded frame bytes, framed for TCP at most once however many connections get them. */
export class OutFrame {
  private prefixed: Buffer | undefined;
  constructor(readonly bytes: Uint8Array) {}
  get tcp(): Buffer {
    return (this.prefixed ??= lengthPrefixed(this.bytes));
  }
}

/**
 * Frames written to one socket in the same tick leave in one system call: the
 * first write of a tick corks the socket and the tick's end uncorks it (a
 * SendAck, a Push and a delivery event for one connection, or several pushes
 * of a batch, cost one `writev` instead of one each). Nothing waits past the
 * tick, so no latency is added; `writableLength` still counts what is corked,
 * so the outbound limit sees it.
 */
export class TickCork {
  private corked = false;
  constructor(private readonly socket: Socket) {}

  /** Call before each write. */
  hold(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    process.nextTick(() => this.release());
  }

  /**
   * Hand what this tick wrote to the kernel now. Call before destroying the
   * socket: destroy() drops corked writes, and a frame written before it
   * (the error that says why a connection is cut) must still go out.
   */
  release(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }
}

export interface TransportSink {
  /** One frame's bytes. Return false to stop delivery until resume(). */
  onPayload(payload: Uint8Array): boolean;
  /** The byte stream itself is broken (oversized or undecodable framing). */
  onFramingError(code: number, message: string): void;
  /** Transport-level sign of life (a WebSocket ping). */
  onActivity(): void;
  onClose(): void;
}

export type TransportKind = 'tcp' | 'ws';

export interface Transport {
  readonly kind: TransportKind;
  /** The peer socket's "host:port" (for logs). */
  readonly remoteAddress: string;
  /**
   * The client's address, what the per-address limits count: the socket's
   * remote address, or, for a WebSocket from a trusted proxy, the address it
   * forwarded for (see TrustedProxies in limits.ts). No port.
   */
  readonly clientAddress: string;
  /** Bytes accepted by send() and not yet handed to the kernel. */
  readonly bufferedBytes: number;
  attach(sink: TransportSink): void;
  send(frame: OutFrame): void;
  /** Continue delivering payloads after the sink returned false. */
  resume(): void;
  /** Flush what was sent, then close. */
  end(): void;
  /** Close now. */
  destroy(): void;
}

/** An address as the limits key it: IPv4-mapped IPv6 (::ffff:10.0.0.1) as plain IPv4, IPv6 in lower case. */
export function normalizeAddress(address: string | undefined): string {
  if (address === undefined || address === '') return '?';
  const lower = address.toLowerCase();
  return lower.startsWith('::ffff:') && lower.includes('.') ? lower.slice(7) : lower;
}

/** A framing error waiting in the held queue behind the payloads that came before it. */
interface HeldFault {
  code: number;
  message: string;
}

/**
 * The part both adapters share: a queue of payloads that arrived while the
 * sink had paused delivery. A framing error found while paused waits in the
 * same queue, so the sink sees it in stream order, after the frames sent
 * before it (a WebSocket adapter learns of an oversized message as soon as it
 * arrives, possibly while earlier ones are still held).
 */
export abstract class PausableDelivery {
  protected sink: TransportSink | undefined;
  private held: (Uint8Array | HeldFault)[] = [];
  private paused = false;
  protected closed = false;
  /** end() was called: whatever else arrives is read and dropped, never buffered. */
  protected ending = false;

  protected abstract pauseSource(): void;
  protected abstract resumeSource(): void;

  attach(sink: TransportSink): void {
    this.sink = sink;
  }

  protected deliver(payload: Uint8Array): void {
    if (this.closed || this.ending || !this.sink) return;
    if (this.paused) {
      this.held.push(payload);
      return;
    }
    if (!this.sink.onPayload(payload)) this.pause();
  }

  /** The byte stream is broken here: tell the sink, after whatever is held. */
  protected deliverFault(code: number, message: string): void {
    if (this.closed || this.ending || !this.sink) return;
    if (this.paused) this.held.push({ code, message });
    else this.sink.onFramingError(code, message);
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.pauseSource();
  }

  /** Stop delivering for good and drop what was held (the connection is closing). */
  protected stopDelivery(): void {
    this.ending = true;
    this.held = [];
  }

  resume(): void {
    if (!this.paused || this.closed || this.ending) return;
    this.paused = false;
    while (this.held.length > 0 && !this.paused && !this.closed && !this.ending) {
      const next = this.held.shift()!;
      if (!(next instanceof Uint8Array)) {
        this.sink!.onFramingError(next.code, next.message);
        return;
      }
      if (!this.sink!.onPayload(next)) this.pause();
    }
    if (this.ending) return;
    if (!this.paused && !this.closed) this.resumeSource();
  }
}

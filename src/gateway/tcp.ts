// TCP adapter: 4-byte big-endian length + one protobuf Frame.
import net from 'node:net';
import { DecodeError, ErrorCode } from '../protocol/index.js';
import { PausableDelivery, TickCork, normalizeAddress, type OutFrame, type Transport } from './transport.js';

const EMPTY = Buffer.alloc(0);
/** A buffer started before a frame's length is known holds at least this much (the 4-byte prefix and a little). */
const MIN_CAPACITY = 16;

/**
 * Splits a TCP byte stream into frame payloads, keeping what is pending in
 * one buffer. A chunk that arrives with nothing pending is used as it is (no
 * copy); bytes that arrive behind pending ones are copied into a buffer of
 * ours, sized for the frame under way once its length prefix is known. So a
 * client trickling a frame a byte at a time costs the frame's size plus a
 * constant (not a Buffer object per byte), and a length prefix over the limit
 * is refused before any payload byte is kept.
 *
 * The first frame (the login) may be at most `maxFirstFrameBytes`; the ones
 * after it `maxFrameBytes`. Payloads returned are views: the bytes under
 * them are never written again.
 */
export class FrameReader {
  /** Pending bytes are buf[start, end): a view of the last chunk, or (owned) a buffer of ours with room after end. */
  private buf: Buffer = EMPTY;
  private start = 0;
  private end = 0;
  private owned = false;
  private limit: number;

  constructor(
    private readonly maxFrameBytes: number,
    maxFirstFrameBytes: number = maxFrameBytes,
  ) {
    this.limit = Math.min(maxFirstFrameBytes, maxFrameBytes);
  }

  /** Bytes received but not yet returned as a payload. */
  get pending(): number {
    return this.end - this.start;
  }

  /** Bytes of memory the pending bytes keep alive (the chunk or buffer they are in). */
  get retainedBytes(): number {
    return this.pending === 0 ? 0 : this.buf.length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const pending = this.end - this.start;
    if (pending === 0) {
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      this.owned = false;
      return;
    }
    if (this.owned && this.end + chunk.length <= this.buf.length) {
      chunk.copy(this.buf, this.end);
      this.end += chunk.length;
      return;
    }
    // A new buffer (never a move within the old one: payloads already returned may be views of it).
    const need = pending + chunk.length;
    let capacity = Math.max(need, MIN_CAPACITY);
    if (pending >= 4) {
      const length = this.buf.readUInt32BE(this.start);
      if (length <= this.limit) capacity = Math.max(need, 4 + length);
    }
    const next = Buffer.allocUnsafeSlow(capacity);
    this.buf.copy(next, 0, this.start, this.end);
    chunk.copy(next, pending);
    this.buf = next;
    this.start = 0;
    this.end = need;
    this.owned = true;
  }

  /**
   * The next complete payload, or undefined when more bytes are needed.
   * Throws DecodeError(FRAME_TOO_LARGE) when a length prefix is over the limit.
   */
  next(): Buffer | undefined {
    if (this.end - this.start < 4) return undefined;
    const length = this.buf.readUInt32BE(this.start);
    if (length > this.limit) {
      const what = this.limit < this.maxFrameBytes ? 'login ' : '';
      throw new DecodeError(ErrorCode.FRAME_TOO_LARGE, `${what}frame of ${length} bytes is over the ${this.limit}-byte ${what}limit`);
    }
    if (this.end - this.start < 4 + length) return undefined;
    const payload = this.buf.subarray(this.start + 4, this.start + 4 + length);
    this.start += 4 + length;
    this.limit = this.maxFrameBytes;
    if (this.start === this.end) this.clear();
    return payload;
  }

  /** Drop whatever is pending. */
  clear(): void {
    this.buf = EMPTY;
    this.start = 0;
    this.end = 0;
    this.owned = false;
  }
}

export interface TcpTransportOptions {
  /** Largest first frame (the login): all a connection not logged in may have buffered. @default maxFrameBytes */
  maxLoginFrameBytes?: number;
}

export class TcpTransport extends PausableDelivery implements Transport {
  readonly kind = 'tcp' as const;
  readonly remoteAddress: string;
  readonly clientAddress: string;
  private readonly reader: FrameReader;
  private sourcePaused = false;
  private readonly cork: TickCork;

  constructor(
    private readonly socket: net.Socket,
    maxFrameBytes: number,
    options: TcpTransportOptions = {},
  ) {
    super();
    this.remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.clientAddress = normalizeAddress(socket.remoteAddress);
    this.reader = new FrameReader(maxFrameBytes, options.maxLoginFrameBytes);
    this.cork = new TickCork(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {
      /* reported through close */
    });
    socket.on('close', () => {
      this.closed = true;
      this.sink?.onClose();
    });
  }

  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  /** Bytes read and not yet delivered as a frame (tests, diagnostics). */
  get pendingBytes(): number {
    return this.reader.pending;
  }

  private onData(chunk: Buffer): void {
    if (this.ending) return; // closing: read and drop
    this.reader.push(chunk);
    this.drain();
  }

  private drain(): void {
    try {
      while (!this.closed && !this.ending && !this.sourcePaused) {
        const payload = this.reader.next();
        if (!payload) return;
        this.deliver(payload);
      }
    } catch (err) {
      const code = err instanceof DecodeError ? err.code : ErrorCode.BAD_FRAME;
      this.reader.clear(); // the stream is unusable; drop what it buffered
      this.sink?.onFramingError(code, (err as Error).message);
    }
  }

  protected pauseSource(): void {
    this.sourcePaused = true;
    this.socket.pause();
  }

  protected resumeSource(): void {
    if (this.ending) return;
    this.sourcePaused = false;
    this.drain();
    if (!this.sourcePaused && !this.closed) this.socket.resume();
  }

  send(frame: OutFrame): void {
    if (this.closed || this.socket.destroyed) return;
    this.cork.hold();
    this.socket.write(frame.tcp);
  }

  end(): void {
    this.stopDelivery();
    this.reader.clear();
    if (this.socket.destroyed) return;
    this.socket.resume(); // keep reading (and dropping) so the peer's FIN is seen
    this.socket.end();
    // A peer that never reads would keep the socket half-open forever.
    setTimeout(() => this.destroy(), 2000).unref();
  }

  destroy(): void {
    this.reader.clear();
    this.cork.release(); // what was written before still goes out first
    this.socket.destroy();
  }
}

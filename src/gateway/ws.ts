// WebSocket adapter: one binary message = one protobuf Frame, at /ws.
//
// Memory before login. The ws library reads a message up to its server-wide
// maxPayload (4x the frame limit) and cannot be given a smaller one per
// connection, so until the first message (the login) has arrived this
// adapter counts what the socket delivers itself, after ws has parsed each
// read: more than the login limit plus a little WebSocket framing, or more
// than LOGIN_MAX_READS reads (each read is a Buffer the ws reader keeps until
// its frame is whole: a trickle would cost an object per byte), and the
// connection is refused with FRAME_TOO_LARGE. The first message itself may be
// at most the login limit. So a connection that has not logged in holds at
// most ~maxLoginFrameBytes + 1 KiB of message bytes, LOGIN_MAX_READS read
// buffers or 64 fragments (listeners.ts, WS_MAX_FRAGMENTS), and the read
// that crossed the line (≤ 64 KiB, let go as it closes). Measured with the
// 8 KiB default, 300 connections each just under the bounds: ~21 KB of heap
// per connection for 60 reads of 150 bytes, ~25 KB for 60 fragments (before:
// up to 256 KiB of message, in up to 16,384 fragments or a read per byte).
// After the first message, reading pauses until the login is done.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { WebSocket, RawData } from 'ws';
import { ErrorCode } from '../protocol/index.js';
import { PausableDelivery, TickCork, normalizeAddress, type OutFrame, type Transport } from './transport.js';

/** WebSocket framing a login may come with on top of its bytes: frame headers and masks, a few control frames. */
export const LOGIN_FRAMING_SLACK = 1024;
/** Socket reads before the first message is whole. */
export const LOGIN_MAX_READS = 64;
/** Bytes read from a connection after end() before it is cut (its close handshake needs a few). */
const ENDING_READ_BYTES = 16 * 1024;

function toBytes(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

export interface WsTransportOptions {
  /** Largest first message (the login), and so what the connection may send before it. @default maxFrameBytes */
  maxLoginFrameBytes?: number;
  /** The client's address (X-Forwarded-For from a trusted proxy). @default the socket's remote address */
  clientAddress?: string;
}

export class WsTransport extends PausableDelivery implements Transport {
  readonly kind = 'ws' as const;
  readonly remoteAddress: string;
  readonly clientAddress: string;
  private readonly maxLoginFrameBytes: number;
  /** The first message (the login) has arrived: from now on messages may be as large as maxFrameBytes. */
  private firstMessage = false;
  /** Read from the socket before the first message (bytes, reads), or after end() (bytes). */
  private readBytes = 0;
  private reads = 0;
  /** The budget before the first message was passed (refused once). */
  private overBudget = false;
  /** ws writes to the upgraded request's socket: frames of one tick leave together. */
  private readonly cork: TickCork;

  constructor(
    private readonly ws: WebSocket,
    request: IncomingMessage,
    private readonly maxFrameBytes: number,
    options: WsTransportOptions = {},
  ) {
    super();
    const socket = request.socket as Socket;
    this.cork = new TickCork(socket);
    this.remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.clientAddress = options.clientAddress ?? normalizeAddress(socket.remoteAddress);
    this.maxLoginFrameBytes = Math.min(options.maxLoginFrameBytes ?? maxFrameBytes, maxFrameBytes);
    ws.on('message', (data, isBinary) => {
      const first = !this.firstMessage;
      this.firstMessage = true;
      if (this.ending) return; // closing: read and drop
      if (!isBinary) {
        this.deliverFault(ErrorCode.BAD_FRAME, 'text messages are not frames; send binary');
        return;
      }
      const bytes = toBytes(data);
      const limit = first ? this.maxLoginFrameBytes : this.maxFrameBytes;
      if (bytes.length > limit) {
        const what = first && limit < this.maxFrameBytes ? 'login ' : '';
        this.deliverFault(ErrorCode.FRAME_TOO_LARGE, `${what}frame of ${bytes.length} bytes is over the ${limit}-byte ${what}limit`);
        return;
      }
      this.deliver(bytes);
    });
    // Added after ws's own reader: it sees each read once ws has parsed it (and emitted what it completed).
    socket.on('data', (chunk: Buffer) => this.onRead(chunk));
    ws.on('ping', () => this.sink?.onActivity());
    ws.on('pong', () => this.sink?.onActivity());
    ws.on('error', () => {
      /* reported through close */
    });
    ws.on('close', () => {
      this.closed = true;
      this.sink?.onClose();
    });
  }

  private onRead(chunk: Buffer): void {
    if (this.closed) return;
    if (this.ending) {
      // Closing: what still comes is read and dropped, but ws would keep an unfinished message; cut a peer that keeps sending.
      this.readBytes += chunk.length;
      if (this.readBytes > ENDING_READ_BYTES) this.terminate();
      return;
    }
    if (this.firstMessage) return;
    this.readBytes += chunk.length;
    this.reads++;
    const budget = this.maxLoginFrameBytes + LOGIN_FRAMING_SLACK;
    if ((this.readBytes <= budget && this.reads <= LOGIN_MAX_READS) || this.overBudget) return;
    this.overBudget = true;
    // Once the ticks of this read are over: ws reports a message past its own read limit (close 1009)
    // a couple of ticks after parsing its header, and that answer stands.
    setImmediate(() => {
      if (this.firstMessage || this.closed || this.ending || this.ws.readyState !== this.ws.OPEN) return;
      this.deliverFault(ErrorCode.FRAME_TOO_LARGE, this.readBytes > budget
        ? `more than ${budget} bytes before a login frame (at most ${this.maxLoginFrameBytes} bytes)`
        : `the login frame is coming in more than ${LOGIN_MAX_READS} pieces; send it whole`);
    });
  }

  get bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }

  protected pauseSource(): void {
    // Once closing, keep reading so the peer's close frame completes the handshake.
    if (!this.ending) this.ws.pause();
  }

  protected resumeSource(): void {
    this.ws.resume();
  }

  send(frame: OutFrame): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.cork.hold();
    this.ws.send(frame.bytes, { binary: true });
  }

  end(): void {
    if (!this.ending) this.readBytes = 0;
    this.stopDelivery();
    this.ws.resume();
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(1000);
    setTimeout(() => this.terminate(), 2000).unref();
  }

  destroy(): void {
    this.terminate();
  }

  /** Cut the connection now; what was written before still goes out first. */
  private terminate(): void {
    this.cork.release();
    this.ws.terminate();
  }
}

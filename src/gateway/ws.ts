// WebSocket adapter: one binary message = one protobuf Frame, at /ws.
import type { IncomingMessage } from 'node:http';
import type { WebSocket, RawData } from 'ws';
import { ErrorCode } from '../protocol/index.js';
import { PausableDelivery, type OutFrame, type Transport } from './transport.js';

function toBytes(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

export class WsTransport extends PausableDelivery implements Transport {
  readonly kind = 'ws' as const;
  readonly remoteAddress: string;

  constructor(
    private readonly ws: WebSocket,
    request: IncomingMessage,
    private readonly maxFrameBytes: number,
  ) {
    super();
    this.remoteAddress = `${request.socket.remoteAddress ?? '?'}:${request.socket.remotePort ?? 0}`;
    ws.on('message', (data, isBinary) => {
      if (this.ending) return; // closing: read and drop
      if (!isBinary) {
        this.deliverFault(ErrorCode.BAD_FRAME, 'text messages are not frames; send binary');
        return;
      }
      const bytes = toBytes(data);
      if (bytes.length > this.maxFrameBytes) {
        this.deliverFault(
          ErrorCode.FRAME_TOO_LARGE,
          `frame of ${bytes.length} bytes is over the ${this.maxFrameBytes}-byte limit`,
        );
        return;
      }
      this.deliver(bytes);
    });
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
    this.ws.send(frame.bytes, { binary: true });
  }

  end(): void {
    this.stopDelivery();
    this.ws.resume();
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(1000);
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  destroy(): void {
    this.ws.terminate();
  }
}

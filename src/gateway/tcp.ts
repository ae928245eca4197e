// TCP adapter: 4-byte big-endian length + one protobuf Frame.
import net from 'node:net';
import { DecodeError, ErrorCode, LengthPrefixedReader } from '../protocol/index.js';
import { PausableDelivery, type OutFrame, type Transport } from './transport.js';

export class TcpTransport extends PausableDelivery implements Transport {
  readonly kind = 'tcp' as const;
  readonly remoteAddress: string;
  private reader: LengthPrefixedReader;
  private sourcePaused = false;

  constructor(
    private readonly socket: net.Socket,
    maxFrameBytes: number,
  ) {
    super();
    this.remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.reader = new LengthPrefixedReader(maxFrameBytes);
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
      this.reader = new LengthPrefixedReader(1); // the stream is unusable; drop what it buffered
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
    this.socket.write(frame.tcp);
  }

  end(): void {
    this.stopDelivery();
    if (this.socket.destroyed) return;
    this.socket.resume(); // keep reading (and dropping) so the peer's FIN is seen
    this.socket.end();
    // A peer that never reads would keep the socket half-open forever.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

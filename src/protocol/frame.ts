// Pure codec: bytes in, frames out. No sockets here, so it is tested and
// fuzzed with plain buffers.
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { FrameSchema, ErrorCode, type Frame } from './gen/longlink/v1/longlink_pb.js';

export type FrameBody = Frame['body'];
export type FrameCase = NonNullable<FrameBody['case']>;
/** The body of a frame of one case, e.g. `BodyOf<'send'>` is a `Send`. */
export type BodyOf<C extends FrameCase> = Extract<FrameBody, { case: C }>['value'];

/** Default largest frame (protobuf bytes, without the TCP length prefix). */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;

/** Longest SyncRequest.sync_token the server takes, in characters (its own are shorter: docs/protocol.md, "Sync"). */
export const MAX_SYNC_TOKEN = 256;

/** A frame body as written by hand: `{ case: 'ping', value: {} }`. */
export type FrameBodyInit = MessageInitShape<typeof FrameSchema>['body'];

export function makeFrame(id: number, body: FrameBodyInit): Frame {
  return create(FrameSchema, { id, body });
}

export function encodeFrame(frame: Frame): Uint8Array {
  return toBinary(FrameSchema, frame);
}

export class DecodeError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Decodes one Frame; throws DecodeError(BAD_FRAME) for bytes that are not one.
 * `readUnknownFields: false` drops fields this version does not know (the
 * gateway decodes client frames so: padding in unknown fields is not carried
 * up the bus); by default they are kept, and written again on re-encoding.
 */
export function decodeFrame(bytes: Uint8Array, options?: { readUnknownFields?: boolean }): Frame {
  try {
    return fromBinary(FrameSchema, bytes, options);
  } catch (err) {
    throw new DecodeError(ErrorCode.BAD_FRAME, `frame does not decode: ${(err as Error).message}`);
  }
}

/** Prefixes encoded frame bytes with their 4-byte big-endian length (TCP framing). */
export function lengthPrefixed(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + bytes.length);
  out.writeUInt32BE(bytes.length, 0);
  out.set(bytes, 4);
  return out;
}

/**
 * Splits a TCP byte stream into frame payloads. Push chunks in, pull payloads
 * out; the length prefix is checked against the limit before any payload byte
 * is buffered, so an oversized frame costs nothing but its 4-byte header.
 */
export class LengthPrefixedReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** Bytes received but not yet returned as a payload. */
  get pending(): number {
    return this.buffered;
  }

  /**
   * The next complete payload, or undefined when more bytes are needed.
   * Throws DecodeError(FRAME_TOO_LARGE) when a length prefix is over the limit.
   */
  next(): Buffer | undefined {
    if (this.buffered < 4) return undefined;
    const head = this.peek(4);
    const length = head.readUInt32BE(0);
    if (length > this.maxFrameBytes) {
      throw new DecodeError(
        ErrorCode.FRAME_TOO_LARGE,
        `frame of ${length} bytes is over the ${this.maxFrameBytes}-byte limit`,
      );
    }
    if (this.buffered < 4 + length) return undefined;
    this.take(4);
    return this.take(length);
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.peek(n);
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}

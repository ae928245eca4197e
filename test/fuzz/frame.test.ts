// Property-based fuzzing of the pure codec (src/protocol/frame.ts): random
// bytes, mutated valid frames, and valid length-prefixed streams cut at random
// points. Never an exception but a coded DecodeError, never a hang, valid
// frames round-trip, and the frame limit holds. fast-check prints the seed
// and the shrunk counterexample of any failure (rerun with `seed` to replay).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { equals } from '@bufbuild/protobuf';
import {
  DecodeError, ErrorCode, FrameSchema, LengthPrefixedReader, decodeFrame, encodeFrame, errorName, lengthPrefixed,
  type Frame,
} from '../../src/protocol/index.js';
import { NO_POOLS, anyFrame, cutAt, runs } from './arbitraries.js';

/** Frames without huge strings or thousand-entry lists, for the properties that run many times. */
const SMALL = { ...NO_POOLS, big: false };

/** Decodes, or returns the DecodeError; any other exception fails the property. */
function tryDecode(bytes: Uint8Array): Frame | DecodeError {
  try {
    return decodeFrame(bytes);
  } catch (err) {
    assert.ok(err instanceof DecodeError, `decodeFrame threw a non-DecodeError: ${String(err)}`);
    assert.equal(errorName(err.code), 'BAD_FRAME');
    assert.ok(err.message.length > 0);
    return err;
  }
}

/** A decoded frame is canonical: encoding it and decoding again gives the same frame. */
function assertStable(frame: Frame): void {
  const again = decodeFrame(encodeFrame(frame));
  assert.ok(equals(FrameSchema, again, frame), 'a decoded frame does not survive a re-encode');
}

/** Ways to damage a valid encoding. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.constantFrom(0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  const out = Buffer.from(bytes);
  if (out.length === 0) return m.kind === 'insert' ? Buffer.from(m.bytes) : out;
  const at = m.at % out.length;
  switch (m.kind) {
    case 'flip': out[at] = out[at]! ^ (1 << m.bit); return out;
    case 'truncate': return out.subarray(0, at);
    case 'insert': return Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)]);
    case 'set': out[at] = m.value; return out;
  }
}


/**
 * Pull every available payload into `out` (kept if next() throws midway);
 * `next()` is bounded by the bytes buffered (each payload consumes at least
 * its 4-byte header), so a loop past that is a hang.
 */
function drainReader(reader: LengthPrefixedReader, limit: number, out: Buffer[] = []): Buffer[] {
  const bound = Math.floor(reader.pending / 4) + 2;
  for (let i = 0; i < bound; i++) {
    const p = reader.next();
    if (!p) return out;
    assert.ok(p.length <= limit, `a payload of ${p.length} bytes passed a ${limit}-byte limit`);
    out.push(p);
  }
  assert.fail('LengthPrefixedReader.next() kept returning payloads past the buffered bytes');
}

describe('frame codec fuzz', () => {
  test('arbitrary bytes decode to a frame or throw DecodeError(BAD_FRAME), never anything else', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      const r = tryDecode(bytes);
      if (!(r instanceof DecodeError)) assertStable(r);
    }), { numRuns: runs(2000) });
  });

  test('mutated valid frames decode or throw DecodeError(BAD_FRAME)', () => {
    fc.assert(fc.property(anyFrame(SMALL), fc.array(mutation, { minLength: 1, maxLength: 4 }), (frame, mutations) => {
      let bytes = encodeFrame(frame);
      for (const m of mutations) bytes = mutate(bytes, m);
      const r = tryDecode(bytes);
      if (!(r instanceof DecodeError)) assertStable(r);
    }), { numRuns: runs(400) });
  });

  test('every frame of every type round-trips through encode and decode', () => {
    fc.assert(fc.property(anyFrame(NO_POOLS), (frame) => {
      const decoded = decodeFrame(encodeFrame(frame));
      assert.ok(equals(FrameSchema, decoded, frame), `frame ${frame.body.case} did not round-trip`);
    }), { numRuns: runs(150) });
  });

  test('a stream of valid frames cut at arbitrary points comes out whole and in order', () => {
    const limit = 64 * 1024;
    fc.assert(fc.property(
      fc.array(anyFrame(SMALL), { maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (frames, cuts) => {
        const payloads = frames.map(encodeFrame).filter((p) => p.length <= limit);
        const stream = Buffer.concat(payloads.map(lengthPrefixed));
        const reader = new LengthPrefixedReader(limit);
        const got: Buffer[] = [];
        for (const chunk of cutAt(stream, cuts)) {
          reader.push(chunk);
          drainReader(reader, limit, got);
        }
        assert.equal(got.length, payloads.length);
        got.forEach((p, i) => assert.ok(Buffer.from(payloads[i]!).equals(p), `payload ${i} differs`));
        assert.equal(reader.pending, 0);
        for (const [i, p] of got.entries()) assert.ok(equals(FrameSchema, decodeFrame(p), decodeFrame(payloads[i]!)));
      },
    ), { numRuns: runs(300) });
  });

  test('payloads at the limit pass, the first over it throws FRAME_TOO_LARGE after those before it', () => {
    // A small limit makes payloads at, under and over it equally likely.
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 64 }),
      fc.array(fc.integer({ min: 0, max: 80 }), { minLength: 1, maxLength: 10 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (limit, sizes, cuts) => {
        const payloads = sizes.map((n, i) => Buffer.alloc(n, i));
        const firstOver = payloads.findIndex((p) => p.length > limit);
        const reader = new LengthPrefixedReader(limit);
        const got: Buffer[] = [];
        let error: unknown;
        for (const chunk of cutAt(Buffer.concat(payloads.map(lengthPrefixed)), cuts)) {
          reader.push(chunk);
          try {
            drainReader(reader, limit, got);
          } catch (err) {
            error = err;
            break;
          }
        }
        if (firstOver < 0) {
          assert.equal(error, undefined);
          assert.equal(got.length, payloads.length);
        } else {
          assert.ok(error instanceof DecodeError, `expected FRAME_TOO_LARGE, got ${String(error)}`);
          assert.equal(error.code, ErrorCode.FRAME_TOO_LARGE);
          assert.equal(got.length, firstOver, 'payloads before the oversized one are all returned');
        }
        got.forEach((p, i) => assert.ok(payloads[i]!.equals(p)));
      },
    ), { numRuns: runs(500) });
  });

  test('arbitrary byte chunks: payloads within the limit, FRAME_TOO_LARGE or a wait, and every byte accounted for', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 70_000 }),
      fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 12 }),
      (limit, chunks) => {
        const reader = new LengthPrefixedReader(limit);
        let pushed = 0;
        let consumed = 0;
        for (const chunk of chunks) {
          reader.push(Buffer.from(chunk));
          pushed += chunk.length;
          const payloads: Buffer[] = [];
          try {
            drainReader(reader, limit, payloads);
          } catch (err) {
            assert.ok(err instanceof DecodeError, `the reader threw a non-DecodeError: ${String(err)}`);
            assert.equal(err.code, ErrorCode.FRAME_TOO_LARGE);
            return;
          }
          for (const p of payloads) consumed += 4 + p.length;
          assert.equal(consumed + reader.pending, pushed, 'bytes were lost or invented');
        }
      },
    ), { numRuns: runs(1000) });
  });
});

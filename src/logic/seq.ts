import { ErrorCode, LonglinkError } from '../protocol/index.js';

/** A seq from the wire: a safe non-negative integer, or BAD_REQUEST. */
export function seqOf(v: bigint): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'seq out of range');
  return n;
}

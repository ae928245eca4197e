// What each wire error code means for a client: retry or not. One table, so
// the gateway, logic and SDK agree.
import { ErrorCode } from './gen/longlink/v1/longlink_pb.js';

/** Codes after which reconnecting (with backoff) can succeed. */
const RECONNECTABLE = new Set<ErrorCode>([
  ErrorCode.LOGIN_TIMEOUT,
  ErrorCode.HEARTBEAT_TIMEOUT,
  ErrorCode.RATE_LIMITED,
  ErrorCode.SLOW_CONSUMER,
  ErrorCode.SERVER_SHUTDOWN,
  ErrorCode.NODE_EXPIRED,
  ErrorCode.INTERNAL,
  ErrorCode.UNAVAILABLE,
  ErrorCode.BAD_FRAME,
  ErrorCode.FRAME_TOO_LARGE,
  ErrorCode.LOGIN_THROTTLED,
  ErrorCode.CONNECTION_LIMITED,
]);

export function shouldReconnect(code: ErrorCode): boolean {
  return RECONNECTABLE.has(code);
}

/** The stable name of a code, e.g. "TOKEN_EXPIRED", as used in logs, HTTP errors and docs. */
export function errorName(code: ErrorCode): string {
  return ErrorCode[code] ?? `CODE_${code}`;
}

/** An error a role or the SDK raises with a wire code attached. */
export class LonglinkError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'LonglinkError';
  }
  get codeName(): string {
    return errorName(this.code);
  }
}

// The HTTP API's errors, declared once: every code with its status, and the
// status of a request refused with a wire code. Every HTTP error body is
// {"error": {"code", "message"}} (docs/protocol.md, "HTTP API errors").
import { ErrorCode } from './gen/longlink/v1/longlink_pb.js';
import { errorName } from './errors.js';

/** Codes of the HTTP layer itself (routing, auth, body parsing, readiness) and their status. */
export const HTTP_ERRORS = {
  BAD_REQUEST: 400,
  BAD_JSON: 400,
  UNAUTHORIZED: 401,
  DEV_LOGIN_DISABLED: 403,
  /** A browser page on an origin this server does not allow (Origin header), at the API, the page or /ws. */
  ORIGIN_NOT_ALLOWED: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  BODY_TOO_LARGE: 413,
  /** A Host this server is not configured to answer to (DNS rebinding): 421 Misdirected Request. */
  HOST_NOT_ALLOWED: 421,
  HEADERS_TOO_LARGE: 431,
  INTERNAL: 500,
  UNAVAILABLE: 503,
  // Uploads (POST /api/v1/files).
  FILE_TOO_LARGE: 413,
  FILE_EMPTY: 400,
  UPLOAD_ABORTED: 400,
  /** The user's hourly upload quota (files or bytes) is used up. */
  UPLOAD_QUOTA: 429,
  /** Two uploads of this user are running already. */
  UPLOAD_BUSY: 429,
  /** Content-Type says an image type the bytes are not. */
  TYPE_MISMATCH: 415,
  /** An image whose bytes do not decode. */
  IMAGE_UNREADABLE: 422,
  /** An image of more pixels than allowed (a decompression bomb). */
  IMAGE_TOO_LARGE: 422,
} as const;

export type HttpErrorCode = keyof typeof HTTP_ERRORS;

/** The status of a request refused with a wire code (anything not listed: 400). */
const WIRE_STATUS = new Map<ErrorCode, number>([
  [ErrorCode.FORBIDDEN, 403],
  [ErrorCode.TOKEN_MISSING, 401],
  [ErrorCode.TOKEN_INVALID, 401],
  [ErrorCode.TOKEN_EXPIRED, 401],
  [ErrorCode.TOKEN_REVOKED, 401],
  [ErrorCode.FILE_NOT_FOUND, 404],
  [ErrorCode.NOT_MEMBER, 403],
  [ErrorCode.NOT_CONTACT, 403],
  [ErrorCode.TOO_MANY_GROUPS, 409],
  [ErrorCode.BUSY, 429],
  [ErrorCode.CONTENT_BLOCKED, 422],
  [ErrorCode.BLOCKED, 403],
  [ErrorCode.TOO_MANY_BLOCKS, 409],
  [ErrorCode.CONTENT_TOO_LARGE, 413],
  [ErrorCode.NOT_FOUND, 404],
  [ErrorCode.UNAVAILABLE, 503],
  [ErrorCode.INTERNAL, 500],
]);

/** An error the HTTP layer answers with its code's status. */
export class HttpError extends Error {
  constructor(readonly code: HttpErrorCode, message: string) {
    super(message);
    this.name = 'HttpError';
  }

  get status(): number {
    return HTTP_ERRORS[this.code];
  }
}

/** Status and body of an HTTP-layer error. */
export function httpError(code: HttpErrorCode, message: string): { status: number; body: { error: { code: string; message: string } } } {
  return { status: HTTP_ERRORS[code], body: { error: { code, message } } };
}

/** Status and body of a request refused with a wire code (e.g. TEXT_EMPTY: 400, NOT_MEMBER: 403). */
export function wireError(code: ErrorCode, message: string): { status: number; body: { error: { code: string; message: string } } } {
  return { status: WIRE_STATUS.get(code) ?? 400, body: { error: { code: errorName(code), message } } };
}

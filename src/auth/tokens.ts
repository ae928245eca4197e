// Login tokens: HS256 JWTs carrying user, device, platform and expiry.
// Logic issues them (POST /api/v1/tokens); gateways verify them at login
// with the same secret, so a login costs no round trip to logic.
import { SignJWT, jwtVerify, errors, type JWTPayload } from 'jose';
import { ErrorCode, LonglinkError, isValidId } from '../protocol/index.js';

export interface TokenClaims {
  userId: string;
  deviceId: string;
  platform: string;
  /** Expiry, milliseconds since the epoch. */
  expiresAtMs: number;
  /** Issue time, ms since the epoch (0 when the token has none): revocations cut off tokens issued before them. */
  issuedAtMs: number;
}

export const PLATFORMS = ['web', 'ios', 'android', 'desktop', 'cli', 'server', 'other'] as const;
export type Platform = (typeof PLATFORMS)[number];

const ISSUER = 'longlink';

export class TokenService {
  /** Signs new tokens. */
  private readonly key: Uint8Array;
  /** Verify: the current secret first, then earlier ones still accepted during a rotation. */
  private readonly verifyKeys: Uint8Array[];

  /**
   * `previous`: secrets retired by a rotation whose tokens are still accepted
   * (until they expire or the secret is dropped from the list). Connections
   * already logged in are never affected: a token is checked at login only.
   */
  constructor(secret: string, previous: readonly string[] = []) {
    for (const s of [secret, ...previous]) if (s.length < 16) throw new Error('token secret must be at least 16 characters');
    this.key = new TextEncoder().encode(secret);
    this.verifyKeys = [this.key, ...previous.map((s) => new TextEncoder().encode(s))];
  }

  async issue(userId: string, deviceId: string, platform: string, ttlSeconds: number): Promise<{ token: string; expiresAtMs: number }> {
    const nowMs = Date.now();
    const nowS = Math.floor(nowMs / 1000);
    const exp = nowS + ttlSeconds;
    const token = await new SignJWT({ dev: deviceId, plt: platform, iatms: nowMs })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(ISSUER)
      .setSubject(userId)
      .setIssuedAt(nowS)
      .setExpirationTime(exp)
      .sign(this.key);
    return { token, expiresAtMs: exp * 1000 };
  }

  /** Verifies a token; throws LonglinkError with TOKEN_MISSING / TOKEN_EXPIRED / TOKEN_INVALID. */
  async verify(token: string): Promise<TokenClaims> {
    if (!token) throw new LonglinkError(ErrorCode.TOKEN_MISSING, 'login needs a token');
    let payload: JWTPayload | undefined;
    for (const key of this.verifyKeys) {
      try {
        ({ payload } = await jwtVerify(token, key, { algorithms: ['HS256'], issuer: ISSUER, requiredClaims: ['exp', 'sub'] }));
        break;
      } catch (err) {
        if (err instanceof errors.JWTExpired) throw new LonglinkError(ErrorCode.TOKEN_EXPIRED, 'token expired');
        // A signature that does not verify may verify with an earlier secret; anything else is final.
        if (!(err instanceof errors.JWSSignatureVerificationFailed)) break;
      }
    }
    if (!payload) throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token is malformed or its signature does not verify');
    const { sub, dev, plt, exp, iat, iatms } = payload;
    if (typeof sub !== 'string' || !isValidId(sub) || typeof dev !== 'string' || !isValidId(dev) || typeof plt !== 'string' || typeof exp !== 'number') {
      throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token claims are incomplete');
    }
    return { userId: sub, deviceId: dev, platform: plt, expiresAtMs: exp * 1000, issuedAtMs: typeof iatms === 'number' ? iatms : typeof iat === 'number' ? iat * 1000 : 0 };
  }
}

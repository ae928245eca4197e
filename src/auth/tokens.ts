// Login tokens: HS256 JWTs carrying user, device, platform and expiry.
// Logic issues them (POST /api/v1/tokens); gateways verify them at login
// with the same secret, so a login costs no round trip to logic.
import { SignJWT, jwtVerify, errors } from 'jose';
import { ErrorCode, LonglinkError, isValidId } from '../protocol/index.js';

export interface TokenClaims {
  userId: string;
  deviceId: string;
  platform: string;
  /** Expiry, milliseconds since the epoch. */
  expiresAtMs: number;
}

export const PLATFORMS = ['web', 'ios', 'android', 'desktop', 'cli', 'server', 'other'] as const;
export type Platform = (typeof PLATFORMS)[number];

const ISSUER = 'longlink';

export class TokenService {
  private readonly key: Uint8Array;

  constructor(secret: string) {
    if (secret.length < 16) throw new Error('token secret must be at least 16 characters');
    this.key = new TextEncoder().encode(secret);
  }

  async issue(userId: string, deviceId: string, platform: string, ttlSeconds: number): Promise<{ token: string; expiresAtMs: number }> {
    const nowS = Math.floor(Date.now() / 1000);
    const exp = nowS + ttlSeconds;
    const token = await new SignJWT({ dev: deviceId, plt: platform })
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
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.key, { algorithms: ['HS256'], issuer: ISSUER, requiredClaims: ['exp', 'sub'] }));
    } catch (err) {
      if (err instanceof errors.JWTExpired) throw new LonglinkError(ErrorCode.TOKEN_EXPIRED, 'token expired');
      throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token is malformed or its signature does not verify');
    }
    const { sub, dev, plt, exp } = payload;
    if (typeof sub !== 'string' || !isValidId(sub) || typeof dev !== 'string' || !isValidId(dev) || typeof plt !== 'string' || typeof exp !== 'number') {
      throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token claims are incomplete');
    }
    return { userId: sub, deviceId: dev, platform: plt, expiresAtMs: exp * 1000 };
  }
}

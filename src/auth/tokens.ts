// Login tokens: HS256 JWTs carrying user, device, platform and expiry.
// Logic issues them (POST /api/v1/tokens); gateways verify them at login
// with the same secret, so a login costs no round trip to logic.
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { SignJWT, jwtVerify, errors, type JWTPayload } from 'jose';
import { ErrorCode, LonglinkError, SYSTEM_USER, isValidId } from '../protocol/index.js';
import { log as rootLog } from '../observability/log.js';

const log = rootLog.child({ component: 'tokens' });

export interface TokenClaims {
  userId: string;
  deviceId: string;
  platform: string;
  /** Expiry, milliseconds since the epoch. */
  expiresAtMs: number;
  /** Issue time, ms since the epoch (a token without one is refused): revocations cut off tokens issued before them. */
  issuedAtMs: number;
}

const ISSUER = 'longlink';

export class TokenService {
  /** Signs new tokens. */
  private key!: Uint8Array;
  /** Verify: the current secret first, then earlier ones still accepted during a rotation. */
  private verifyKeys!: Uint8Array[];

  /**
   * `previous`: secrets retired by a rotation whose tokens are still accepted
   * (until they expire or the secret is dropped from the list). Connections
   * already logged in are never affected: a token is checked at login only.
   */
  constructor(secret: string, previous: readonly string[] = []) {
    this.setSecrets(secret, previous);
  }

  /** Rotate: sign with `secret` from now on, still accept `previous`. Open connections are untouched. */
  setSecrets(secret: string, previous: readonly string[] = []): void {
    for (const s of [secret, ...previous]) if (s.length < 16) throw new Error('token secret must be at least 16 characters');
    this.key = new TextEncoder().encode(secret);
    this.verifyKeys = [this.key, ...previous.map((s) => new TextEncoder().encode(s))];
  }

  /**
   * Take the secrets from a file (one per line: the first signs, the others
   * are still accepted; blank lines and lines starting with # are skipped) and
   * follow it: a change is picked up within `intervalMs`, and a file that
   * becomes unreadable or invalid leaves the secrets as they were.
   */
  watchFile(path: string, intervalMs = 1000): void {
    const [secret, ...previous] = readSecretsFile(path);
    this.setSecrets(secret!, previous);
    this.unwatch();
    const reload = () => {
      try {
        const [next, ...rest] = readSecretsFile(path);
        this.setSecrets(next!, rest);
      } catch (err) {
        log.error({ err, path }, 'token secrets file not reloaded; the secrets stay as they were');
      }
    };
    watchFile(path, { interval: intervalMs, persistent: false }, reload);
    this.unwatch = () => unwatchFile(path, reload);
  }

  /** Stop following the secrets file (the secrets stay as they are). */
  unwatch: () => void = () => undefined;

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
    // The issue time is what revocations compare with: a token without one cannot be checked.
    const issuedAtMs = typeof iatms === 'number' ? iatms : typeof iat === 'number' ? iat * 1000 : undefined;
    if (typeof sub !== 'string' || !isValidId(sub) || sub === SYSTEM_USER || typeof dev !== 'string' || !isValidId(dev) || typeof plt !== 'string'
      || typeof exp !== 'number' || issuedAtMs === undefined) {
      throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token claims are incomplete');
    }
    return { userId: sub, deviceId: dev, platform: plt, expiresAtMs: exp * 1000, issuedAtMs };
  }
}

/** The secrets of a secrets file, current first; throws when it has none or one is shorter than 16 characters. */
export function readSecretsFile(path: string): string[] {
  const secrets = readFileSync(path, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (secrets.length === 0) throw new Error(`${path} holds no token secret`);
  if (secrets.some((x) => x.length < 16)) throw new Error(`every secret in ${path} must be at least 16 characters`);
  return secrets;
}

/** The token service a role runs with: from the secrets file when configured (followed for rotations), else the configured secrets. */
export function tokenServiceFor(config: { tokenSecret: string; previousTokenSecrets: readonly string[]; tokenSecretsFile?: string }): TokenService {
  const tokens = new TokenService(config.tokenSecret, config.previousTokenSecrets);
  if (config.tokenSecretsFile) tokens.watchFile(config.tokenSecretsFile);
  return tokens;
}

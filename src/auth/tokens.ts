// Login tokens: HS256 JWTs carrying user, device, platform and expiry.
// Logic issues them (POST /api/v1/tokens); gateways verify them at login
// with the same secret, so a login costs no round trip to logic.
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
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

/** The only header this service writes: `{"alg":"HS256","typ":"JWT"}`, base64url. */
const HEADER = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

// HS256 by hand with node:crypto, synchronously: a gateway verifies a token
// at every login, and WebCrypto's HMAC (what a portable JWT library uses)
// cost a fifth of a gateway's CPU during a login storm. Only HS256 is
// accepted, whatever the header says otherwise ("none", RS256, …).

export class TokenService {
  /** Signs new tokens. */
  private key!: KeyObject;
  /** Verify: the current secret first, then earlier ones still accepted during a rotation. */
  private verifyKeys!: KeyObject[];

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
    this.key = createSecretKey(Buffer.from(secret, 'utf8'));
    this.verifyKeys = [this.key, ...previous.map((s) => createSecretKey(Buffer.from(s, 'utf8')))];
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
    const payload = base64url(JSON.stringify({ dev: deviceId, plt: platform, iatms: nowMs, iss: ISSUER, sub: userId, iat: nowS, exp }));
    const signed = `${HEADER}.${payload}`;
    return { token: `${signed}.${hs256(this.key, signed).toString('base64url')}`, expiresAtMs: exp * 1000 };
  }

  /** Verifies a token; throws LonglinkError with TOKEN_MISSING / TOKEN_EXPIRED / TOKEN_INVALID. */
  async verify(token: string): Promise<TokenClaims> {
    if (!token) throw new LonglinkError(ErrorCode.TOKEN_MISSING, 'login needs a token');
    const payload = this.verifiedPayload(token);
    if (!payload) throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token is malformed or its signature does not verify');
    const { sub, dev, plt, exp, iat, iatms, iss, nbf } = payload;
    if (iss !== ISSUER || typeof exp !== 'number' || typeof sub !== 'string') {
      throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token is malformed or its signature does not verify');
    }
    const nowS = Math.floor(Date.now() / 1000);
    if (exp <= nowS) throw new LonglinkError(ErrorCode.TOKEN_EXPIRED, 'token expired');
    if (nbf !== undefined && (typeof nbf !== 'number' || nbf > nowS)) throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token is not valid yet');
    // The issue time is what revocations compare with: a token without one cannot be checked.
    const issuedAtMs = typeof iatms === 'number' ? iatms : typeof iat === 'number' ? iat * 1000 : undefined;
    if (!isValidId(sub) || sub === SYSTEM_USER || typeof dev !== 'string' || !isValidId(dev) || typeof plt !== 'string' || issuedAtMs === undefined) {
      throw new LonglinkError(ErrorCode.TOKEN_INVALID, 'token claims are incomplete');
    }
    return { userId: sub, deviceId: dev, platform: plt, expiresAtMs: exp * 1000, issuedAtMs };
  }

  /** The claims of a well-formed HS256 token signed with one of the verify keys; undefined otherwise. */
  private verifiedPayload(token: string): Record<string, unknown> | undefined {
    const parts = token.split('.');
    if (parts.length !== 3 || !parts.every((p) => BASE64URL.test(p))) return undefined;
    const [header, payload, signature] = parts as [string, string, string];
    const h = parseJson(header);
    if (!h || h.alg !== 'HS256' || (h.crit !== undefined)) return undefined;
    const given = Buffer.from(signature, 'base64url');
    if (given.length !== 32) return undefined;
    const signed = `${header}.${payload}`;
    if (!this.verifyKeys.some((key) => timingSafeEqual(hs256(key, signed), given))) return undefined;
    return parseJson(payload);
  }
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;

function base64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

function hs256(key: KeyObject, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** A token's claims as written, unverified (for a token whose signature was checked already); undefined when not a JWT. */
export function unverifiedClaims(token: string): Record<string, unknown> | undefined {
  const parts = token.split('.');
  return parts.length === 3 ? parseJson(parts[1]!) : undefined;
}

/** A base64url JSON object, or undefined. */
function parseJson(part: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : undefined;
  } catch {
    return undefined;
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

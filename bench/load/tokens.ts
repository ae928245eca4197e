// Login tokens for the load generators, signed synchronously with node:crypto:
// the same HS256 JWT as TokenService.issue (src/auth/tokens.ts: header, iss,
// sub, iat, exp, dev, plt, iatms), which the server verifies as usual. jose's
// async signing imports the key on every call and runs the HMAC as a WebCrypto
// job; at 250,000 logins that was a sixth of a load process's CPU, which the
// server under test then did not get. A worker checks its first token with
// TokenService.verify before it connects anyone (checkToken), so a format
// drift fails the run at once rather than as 250,000 refused logins.
import { createHmac } from 'node:crypto';
import { TokenService } from '../../src/auth/tokens.js';

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64url');
const HEADER = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

export class BenchTokens {
  private readonly key: Buffer;

  constructor(private readonly secret: string) {
    this.key = Buffer.from(secret, 'utf8');
  }

  issue(userId: string, deviceId: string, platform: string, ttlSeconds: number): string {
    const nowMs = Date.now();
    const iat = Math.floor(nowMs / 1000);
    const body = b64(JSON.stringify({ dev: deviceId, plt: platform, iatms: nowMs, iss: 'longlink', sub: userId, iat, exp: iat + ttlSeconds }));
    const signed = `${HEADER}.${body}`;
    return `${signed}.${createHmac('sha256', this.key).update(signed).digest('base64url')}`;
  }

  /** Throws unless the server's own TokenService accepts a token from here as this user and device. */
  async checkToken(userId: string, deviceId: string, platform: string): Promise<void> {
    const claims = await new TokenService(this.secret).verify(this.issue(userId, deviceId, platform, 60));
    if (claims.userId !== userId || claims.deviceId !== deviceId || claims.platform !== platform) {
      throw new Error(`bench tokens: TokenService read ${JSON.stringify(claims)} from a token for ${userId}/${deviceId}/${platform}`);
    }
  }
}

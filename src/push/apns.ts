// Apple Push Notification service: its HTTP/2 API (POST /3/device/{token}),
// authorized by a provider token (a JWT signed ES256 with the team's .p8 key,
// renewed every 50 minutes and when APNs says it expired). One HTTP/2
// session carries every request, opened again when it closes. An http://
// URL speaks HTTP/2 in cleartext (a local fake server in tests).
//
// Per device: 200 delivered; 410, or 400 BadDeviceToken or
// DeviceTokenNotForTopic, the token is dead (reported, not an error); 429,
// 5xx and network failures are worth trying again, for the devices that do
// not have it yet (its apns-id is derived from the notification and the
// token, the same on every try, and its collapse id is the conversation, so
// a device shows one notification per conversation); anything else is a
// refusal.
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import { SignJWT, importPKCS8 } from 'jose';
import { PushError, retryAfterMs, sendPerDevice, type PushProgress, retryableStatus, type PushNotification, type PushPlatform, type PushProvider, type PushResult } from './provider.js';

export interface ApnsOptions {
  teamId: string;
  keyId: string;
  /** The .p8 key (PKCS#8 PEM, EC P-256). */
  privateKeyPem: string;
  /** The app's bundle id. */
  topic: string;
  /** @default https://api.push.apple.com */
  url?: string;
  /** @default 10000 */
  timeoutMs?: number;
}

/** How long a provider token is used before a new one is signed (APNs refuses those older than an hour). */
const TOKEN_TTL_MS = 50 * 60_000;
const DEAD_TOKEN_REASONS = new Set(['BadDeviceToken', 'DeviceTokenNotForTopic', 'Unregistered']);
const EXPIRED_REASONS = new Set(['ExpiredProviderToken', 'InvalidProviderToken']);

/** A UUID made from the notification and the device token: the same on every retry. */
export function apnsId(notificationId: string, token: string): string {
  const h = createHash('sha256').update(`${notificationId}\n${token}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** A collapse id is at most 64 bytes: the conversation id, or its hash when longer. */
export function collapseId(conversationId: string): string {
  return Buffer.byteLength(conversationId) <= 64 ? conversationId : createHash('sha256').update(conversationId).digest('hex');
}

export class ApnsProvider implements PushProvider {
  readonly name = 'apns';
  readonly everyUser = false;
  private session: http2.ClientHttp2Session | undefined;
  private token: { jwt: string; atMs: number } | undefined;
  private readonly url: string;

  constructor(private readonly options: ApnsOptions) {
    this.url = options.url ?? 'https://api.push.apple.com';
  }

  handles(platform: PushPlatform): boolean {
    return platform === 'apns';
  }

  send(n: PushNotification): Promise<PushResult> {
    return sendPerDevice(n, 'APNs', (token) => this.sendOne(n, token));
  }

  async close(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    if (s && !s.closed) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private async sendOne(n: PushNotification, deviceToken: string, renewed = false): Promise<keyof PushProgress> {
    const { status, body, headers } = await this.post(n, deviceToken, await this.providerToken(renewed));
    if (status === 200) return 'sent';
    const reason = parseReason(body);
    if (status === 410 || (status === 400 && DEAD_TOKEN_REASONS.has(reason))) return 'dead';
    if (status === 403 && EXPIRED_REASONS.has(reason) && !renewed) return this.sendOne(n, deviceToken, true);
    throw new PushError(`APNs answered ${status} ${reason}`, retryableStatus(status), retryAfterMs(headers['retry-after'] as string | undefined));
  }

  private async providerToken(renew: boolean): Promise<string> {
    if (!renew && this.token && Date.now() - this.token.atMs < TOKEN_TTL_MS) return this.token.jwt;
    const key = await importPKCS8(this.options.privateKeyPem, 'ES256');
    const jwt = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: this.options.keyId })
      .setIssuer(this.options.teamId).setIssuedAt().sign(key);
    this.token = { jwt, atMs: Date.now() };
    return jwt;
  }

  private connection(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const session = http2.connect(this.url);
    session.on('error', () => {
      // the requests on it fail; the next one opens another session
    });
    session.on('close', () => {
      if (this.session === session) this.session = undefined;
    });
    session.unref();
    this.session = session;
    return session;
  }

  private post(n: PushNotification, deviceToken: string, jwt: string): Promise<{ status: number; body: string; headers: http2.IncomingHttpHeaders }> {
    const payload = JSON.stringify({
      aps: { alert: { title: n.title, body: n.body }, badge: n.badge, sound: 'default', 'thread-id': n.conversationId },
      conversation_id: n.conversationId, seq: n.lastSeq, notification_id: n.id,
    });
    return new Promise((resolve, reject) => {
      const req = this.connection().request({
        ':method': 'POST',
        ':path': `/3/device/${encodeURIComponent(deviceToken)}`,
        authorization: `bearer ${jwt}`,
        'apns-topic': this.options.topic,
        'apns-push-type': 'alert',
        'apns-priority': '10',
        'apns-collapse-id': collapseId(n.conversationId),
        'apns-id': apnsId(n.id, deviceToken),
        'content-type': 'application/json',
      });
      req.setTimeout(this.options.timeoutMs ?? 10_000, () => req.close(http2.constants.NGHTTP2_CANCEL));
      let status = 0;
      let headers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on('response', (h) => {
        headers = h;
        status = Number(h[':status']);
      });
      req.on('data', (c: Buffer) => {
        if (chunks.reduce((sum, x) => sum + x.length, 0) < 16_384) chunks.push(c);
      });
      req.on('end', () => (status > 0 ? resolve({ status, body: Buffer.concat(chunks).toString('utf8'), headers }) : reject(new PushError('APNs closed the stream', true))));
      req.on('error', (err) => reject(new PushError(`APNs unreachable (${err.message})`, true)));
      req.end(payload);
    });
  }
}

function parseReason(body: string): string {
  try {
    return String((JSON.parse(body) as { reason?: unknown }).reason ?? '');
  } catch {
    return '';
  }
}

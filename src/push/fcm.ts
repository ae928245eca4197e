// Firebase Cloud Messaging, its HTTP v1 API: POST
// /v1/projects/{project}/messages:send per device, authorized by an OAuth 2
// access token that a service account gets for itself (a JWT signed RS256
// with its key, exchanged at its token_uri), kept until a minute before it
// expires and renewed when FCM answers 401.
//
// Per device: 200 delivered; 404, or an error whose details say UNREGISTERED
// (or INVALID_ARGUMENT naming the token), the token is dead (reported);
// 429, 5xx and network failures are worth trying again (for the devices
// that do not have it yet); anything else is a refusal. The collapse key and
// tag are the conversation: a device shows one notification per
// conversation.
import { SignJWT, importPKCS8 } from 'jose';
import { PushError, retryAfterMs, sendPerDevice, type PushProgress, retryableStatus, type PushNotification, type PushPlatform, type PushProvider, type PushResult } from './provider.js';

export interface FcmServiceAccount {
  project_id: string;
  client_email: string;
  private_key: string;
  token_uri?: string;
}

export interface FcmOptions {
  serviceAccount: FcmServiceAccount;
  /** @default https://fcm.googleapis.com */
  url?: string;
  /** @default 10000 */
  timeoutMs?: number;
}

const SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';

export class FcmProvider implements PushProvider {
  readonly name = 'fcm';
  readonly everyUser = false;
  private access: { token: string; untilMs: number } | undefined;

  constructor(private readonly options: FcmOptions) {}

  handles(platform: PushPlatform): boolean {
    return platform === 'fcm';
  }

  send(n: PushNotification): Promise<PushResult> {
    return sendPerDevice(n, 'FCM', (token) => this.sendOne(n, token));
  }

  private async sendOne(n: PushNotification, deviceToken: string, renewed = false): Promise<keyof PushProgress> {
    const url = `${(this.options.url ?? 'https://fcm.googleapis.com').replace(/\/$/, '')}/v1/projects/${encodeURIComponent(this.options.serviceAccount.project_id)}/messages:send`;
    const message = {
      message: {
        token: deviceToken,
        notification: { title: n.title, body: n.body },
        android: { collapse_key: n.conversationId, notification: { tag: n.conversationId, notification_count: n.badge } },
        apns: { payload: { aps: { badge: n.badge } } },
        data: { conversation_id: n.conversationId, seq: String(n.lastSeq), notification_id: n.id },
      },
    };
    const res = await this.fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${await this.accessToken(renewed)}`, 'content-type': 'application/json' },
      body: JSON.stringify(message),
    });
    if (res.ok) {
      await res.body?.cancel().catch(() => undefined);
      return 'sent';
    }
    const error = await errorOf(res);
    if (res.status === 401 && !renewed) return this.sendOne(n, deviceToken, true);
    if (res.status === 404 || error.includes('UNREGISTERED') || (res.status === 400 && error.includes('INVALID_ARGUMENT') && /token/i.test(error))) return 'dead';
    throw new PushError(`FCM answered ${res.status} ${error}`.trim(), retryableStatus(res.status), retryAfterMs(res.headers.get('retry-after')));
  }

  private async accessToken(renew: boolean): Promise<string> {
    if (!renew && this.access && Date.now() < this.access.untilMs) return this.access.token;
    const account = this.options.serviceAccount;
    const tokenUri = account.token_uri ?? 'https://oauth2.googleapis.com/token';
    const key = await importPKCS8(account.private_key, 'RS256');
    const assertion = await new SignJWT({ scope: SCOPE }).setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .setIssuer(account.client_email).setAudience(tokenUri).setIssuedAt().setExpirationTime('1h').sign(key);
    const res = await this.fetch(tokenUri, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString(),
    });
    if (!res.ok) {
      await res.body?.cancel().catch(() => undefined);
      throw new PushError(`FCM's token endpoint answered ${res.status}`, retryableStatus(res.status), retryAfterMs(res.headers.get('retry-after')));
    }
    const body = await res.json() as { access_token?: unknown; expires_in?: unknown };
    if (typeof body.access_token !== 'string') throw new PushError('FCM\'s token endpoint gave no access_token', true);
    const ttlS = typeof body.expires_in === 'number' ? body.expires_in : 3600;
    this.access = { token: body.access_token, untilMs: Date.now() + Math.max(0, ttlS - 60) * 1000 };
    return this.access.token;
  }

  private async fetch(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, { ...init, redirect: 'manual', signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000) });
    } catch (err) {
      throw new PushError(`FCM unreachable (${(err as Error).name})`, true);
    }
  }
}

/** An FCM error's status and details as one line of text (for matching and logs; never the token). */
async function errorOf(res: Response): Promise<string> {
  try {
    const text = (await res.text()).slice(0, 16_384);
    const e = (JSON.parse(text) as { error?: { status?: unknown; details?: { errorCode?: unknown }[]; message?: unknown } }).error;
    return [e?.status, ...(e?.details ?? []).map((d) => d.errorCode), typeof e?.message === 'string' ? e.message.slice(0, 200) : undefined]
      .filter((x) => typeof x === 'string').join(' ');
  } catch {
    return '';
  }
}

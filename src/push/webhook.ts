// The business's own push service as a provider: one signed JSON POST per
// notification, whatever devices the user registered (they are listed), so
// a product that already sends its pushes keeps doing so. Signed as the
// other webhooks are (src/risk/webhooks.ts): x-longlink-event-id is the
// notification's id, x-longlink-timestamp and x-longlink-signature
// v1=<HMAC-SHA256(secret, "<timestamp>.<body>")>; the body is the same bytes
// on every retry. Redirects are not followed. The answer may name dead
// tokens: {"invalid_tokens": [...]}.
//
// Never logged: the secret, the bodies, the URL (it may hold credentials).
import { EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signBody } from '../risk/webhooks.js';
import { PushError, retryAfterMs, retryableStatus, type PushNotification, type PushPlatform, type PushProvider, type PushResult } from './provider.js';

const MAX_ANSWER_BYTES = 64 * 1024;

export interface WebhookPushOptions {
  url: string;
  secret: string;
  /** @default 5000 */
  timeoutMs?: number;
}

/** The JSON a notification is posted as (fields in one fixed order: the same bytes every time). */
export function notificationJson(n: PushNotification): string {
  return JSON.stringify({
    id: n.id, user_id: n.userId, conversation_id: n.conversationId, seq: n.lastSeq, count: n.count, from_user: n.fromUser,
    title: n.title, body: n.body, badge: n.badge,
    devices: n.devices.map((d) => ({ device_id: d.deviceId, platform: d.platform, token: d.token })),
    sent_at_ms: n.sentAtMs,
  });
}

export class WebhookPushProvider implements PushProvider {
  readonly name = 'webhook';
  readonly everyUser = true;

  constructor(private readonly options: WebhookPushOptions) {
    const protocol = new URL(options.url).protocol;
    if (protocol !== 'http:' && protocol !== 'https:') throw new TypeError(`push webhook URL scheme ${protocol} is not http(s)`);
  }

  handles(platform: PushPlatform): boolean {
    return platform === 'webhook';
  }

  async send(n: PushNotification): Promise<PushResult> {
    const body = notificationJson(n);
    const timestamp = Math.floor(Date.now() / 1000);
    let res: Response;
    try {
      res = await fetch(this.options.url, {
        method: 'POST',
        redirect: 'manual',
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 5000),
        headers: {
          'content-type': 'application/json',
          'user-agent': 'longlink-push/1',
          [EVENT_ID_HEADER]: n.id,
          [TIMESTAMP_HEADER]: String(timestamp),
          [SIGNATURE_HEADER]: signBody(this.options.secret, timestamp, body),
        },
        body,
      });
    } catch (err) {
      throw new PushError(`push webhook unreachable (${(err as Error).name})`, true);
    }
    if (res.status >= 200 && res.status < 300) return { invalidTokens: await invalidTokens(res) };
    await res.body?.cancel().catch(() => undefined);
    if (res.status >= 300 && res.status < 400) throw new PushError(`push webhook answered a redirect (${res.status}); not followed`, true);
    throw new PushError(`push webhook answered ${res.status}`, retryableStatus(res.status), retryAfterMs(res.headers.get('retry-after')));
  }
}

/** The dead tokens an answer names (none when it says nothing, is not JSON or is too long). */
async function invalidTokens(res: Response): Promise<string[]> {
  if (Number(res.headers.get('content-length') ?? 0) > MAX_ANSWER_BYTES) {
    await res.body?.cancel().catch(() => undefined);
    return [];
  }
  try {
    const text = await res.text();
    if (text.length > MAX_ANSWER_BYTES || text.trim() === '') return [];
    const tokens = (JSON.parse(text) as { invalid_tokens?: unknown }).invalid_tokens;
    return Array.isArray(tokens) ? tokens.filter((t): t is string => typeof t === 'string').slice(0, 100) : [];
  } catch {
    return [];
  }
}

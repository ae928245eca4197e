// What a push provider is to the notifier (notifier.ts): something that takes
// one notification for one user and its devices of the provider's platforms,
// and says whether it went, whether to try again, and which device tokens it
// learned are dead. sendWithRetry tries again with exponential backoff and
// jitter on what is worth trying again (a network failure, 408, 429, 5xx),
// honouring a Retry-After up to its ceiling; a refusal (another 4xx) is not
// tried again. A provider that sends per device says, in its error, which
// devices already have the notification (or are dead): a retry goes only to
// the others, so no device gets it twice.

export type PushPlatform = 'apns' | 'fcm' | 'webhook';

export interface PushDevice {
  deviceId: string;
  platform: PushPlatform;
  token: string;
}

export interface PushNotification {
  /** Stable for this notification: `${userId}:${conversationId}:${lastSeq}` — the same on every retry. */
  id: string;
  userId: string;
  conversationId: string;
  /** The newest message it covers. */
  lastSeq: number;
  /** How many messages of the conversation it collapses (a burst). */
  count: number;
  /** Who wrote the newest. */
  fromUser: string;
  /** At most 100 characters. */
  title: string;
  /** At most 200 characters. */
  body: string;
  /** The user's unread count over its conversations (the badge). */
  badge: number;
  /** The user's registered devices this provider handles (may be empty for the webhook provider). */
  devices: PushDevice[];
  /** When the newest message was sent. */
  sentAtMs: number;
}

export interface PushResult {
  /** Device tokens the provider says are no longer valid (the caller forgets them). */
  invalidTokens: string[];
}

/** The device tokens a per-device send got through before it failed: `sent` have it, `dead` are no longer valid. */
export interface PushProgress {
  sent: string[];
  dead: string[];
}

/** A failed send: `retryable` (network, 408, 429, 5xx) or not (the provider refused it). */
export class PushError extends Error {
  constructor(message: string, readonly retryable: boolean, readonly retryAfterMs?: number, readonly progress?: PushProgress) {
    super(message);
    this.name = 'PushError';
  }
}

export interface PushProvider {
  /** 'webhook', 'apns', 'fcm': for metrics and logs. */
  readonly name: string;
  /** The platforms whose devices it sends to. */
  handles(platform: PushPlatform): boolean;
  /** Called even for a user with no device of its platforms (the webhook: the business's service knows its users' devices). */
  readonly everyUser: boolean;
  send(n: PushNotification): Promise<PushResult>;
  close?(): Promise<void>;
}

/**
 * A provider's send to each device in turn: the tokens sent and found dead
 * are reported; any failure is thrown with them (PushError.progress), a
 * retryable one first, so that a retry goes only to the devices that failed.
 */
export async function sendPerDevice(n: PushNotification, service: string, sendOne: (token: string) => Promise<keyof PushProgress>): Promise<PushResult> {
  const progress: PushProgress = { sent: [], dead: [] };
  let retry: PushError | undefined;
  let refused: PushError | undefined;
  for (const device of n.devices) {
    try {
      progress[await sendOne(device.token)].push(device.token);
    } catch (err) {
      const e = err instanceof PushError ? err : new PushError(`${service} unreachable (${(err as Error).message})`, true);
      if (e.retryable) retry ??= e;
      else refused ??= e;
    }
  }
  const failed = retry ?? refused;
  if (failed) throw new PushError(failed.message, failed.retryable, failed.retryAfterMs, progress);
  return { invalidTokens: progress.dead };
}

export interface RetryOptions {
  attempts: number;
  firstBackoffMs: number;
  maxBackoffMs: number;
  signal?: AbortSignal;
}

export interface RetryOutcome {
  outcome: 'delivered' | 'refused' | 'failed';
  invalidTokens: string[];
  attempts: number;
}

/** Sends with backoff on retryable failures, each retry to the devices that do not have it yet; never throws. */
export async function sendWithRetry(provider: PushProvider, n: PushNotification, options: RetryOptions): Promise<RetryOutcome> {
  const invalidTokens: string[] = [];
  let current = n;
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      const result = await provider.send(current);
      return { outcome: 'delivered', invalidTokens: [...invalidTokens, ...result.invalidTokens], attempts };
    } catch (err) {
      if (err instanceof PushError && err.progress) {
        invalidTokens.push(...err.progress.dead);
        const done = new Set([...err.progress.sent, ...err.progress.dead]);
        current = { ...current, devices: current.devices.filter((d) => !done.has(d.token)) };
      }
      const retryable = !(err instanceof PushError) || err.retryable;
      if (!retryable) return { outcome: 'refused', invalidTokens, attempts };
      if (attempts >= options.attempts || options.signal?.aborted) return { outcome: 'failed', invalidTokens, attempts };
      const backoff = Math.min(options.maxBackoffMs, options.firstBackoffMs * 2 ** (attempts - 1));
      const wait = err instanceof PushError && err.retryAfterMs !== undefined ? Math.min(options.maxBackoffMs, err.retryAfterMs) : backoff / 2 + Math.random() * backoff / 2;
      if (!(await pause(wait, options.signal))) return { outcome: 'failed', invalidTokens, attempts };
    }
  }
}

/** Waits `ms`; false when aborted meanwhile. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', stop);
      resolve(true);
    }, ms);
    const stop = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    signal?.addEventListener('abort', stop, { once: true });
  });
}

/** A Retry-After header (seconds, or an HTTP date) in ms; undefined when absent or unreadable. */
export function retryAfterMs(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Whether a status is worth trying again. */
export function retryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

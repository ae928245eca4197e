// Business webhooks: how a product plugs its own rules into Longlink.
//
// Two kinds of call, both a signed JSON POST to a URL the product runs:
//
// - before-send (callBeforeSend): on the send path, before the message is
//   stored. The endpoint answers allow, deny (with a reason) or replace (with
//   a new text). Anything else — a timeout, a non-2xx status, a network error,
//   an answer that is not that JSON or is over MAX_ANSWER_BYTES — is a
//   failure, settled by the configured policy (`onFailure`: allow or deny) and
//   reported in `failed`. It never throws: the send path always gets an answer
//   within about `timeoutMs`.
//
// - after-* (WebhookService): after the fact, from a consumer group
//   (WEBHOOK_GROUP) of the committed stream (src/engines/bus.ts), beside the
//   send path: while the receiver is down chat goes on and the group's lag
//   grows. after-send for plain messages, after-recall for recalls,
//   after-group-change for every other timeline event (afterEventOf).
//
// Contract of after-* delivery:
// - At least once. An event's id is `${conversation_id}:${seq}`, the same for
//   every delivery of the same stored message (a retry, a batch handed again,
//   a message committed twice), and its body is byte-identical each time
//   (created_at_ms is the message's sent_at_ms): the receiver drops repeats by
//   id. Only the timestamp and signature headers change between attempts.
// - In order within a conversation: the events of a batch are posted one at a
//   time, in the bus's order, and the bus keeps a conversation's order.
// - Each event is retried with exponential backoff and jitter up to `attempts`
//   times (a 429's or 503's Retry-After is honoured up to maxBackoffMs).
//   2xx: delivered. 4xx other than 408 and 429: the receiver refused it;
//   not retried, reported (hooks.onFailed 'refused', a warn line) and dropped. Anything
//   else that lasts past `attempts`: deliver throws, so the bus hands the
//   batch again later (the events of the batch already delivered are sent
//   again, with the same ids). The bus gives up on an entry after its own
//   `maxDeliveries` (logged and counted there as skipped): a receiver down
//   longer than that loses those events.
// - Events committed while no webhook target is configured are acked and
//   never sent, not even once a target is configured later.
// - What was delivered, refused, or acked unsent is counted with the group's
//   acks (CommittedEffects counters `delivered`, `refused`, `unconfigured`;
//   Bus.committedCounters(WEBHOOK_GROUP)), so the counts are exact: an event
//   sent again after its batch failed is counted once, when the batch is acked.
//
// Signing: every request has `x-longlink-event-id`, `x-longlink-timestamp`
// (unix seconds) and `x-longlink-signature: v1=<hex HMAC-SHA256(secret,
// "<timestamp>.<body>")>`; receivers check it with verifySignature, which
// also rejects timestamps older (or newer) than a tolerance (replays).
//
// Redirects are never followed (a 3xx is a failure): a signed body goes only
// to the configured URL, which must be http(s).
//
// Never logged: the secret, request and answer bodies, the target URL (it may
// carry credentials).
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { type Bus, type Committed, type CommittedEffects, type Subscription } from '../engines/bus.js';
import { messageFromWire, type ContentData, type GroupRoleName, type TimelineEventName } from '../protocol/convert.js';
import { log as rootLog } from '../observability/log.js';

const log = rootLog.child({ component: 'webhooks' });

/** The committed stream's consumer group that delivers after-* events. */
export const WEBHOOK_GROUP = 'webhooks';

/** Largest before-send answer read; a longer one is a failure ('invalid'). */
export const MAX_ANSWER_BYTES = 64 * 1024;
/** A deny reason from the endpoint is cut to this many characters. */
export const MAX_REASON_CHARS = 200;
/** verifySignature's default: a timestamp further than this from now (either way) is refused. */
export const DEFAULT_SIGNATURE_TOLERANCE_SEC = 300;
/** The deny reason when before-send failed and its policy is deny. */
export const BEFORE_SEND_FAILED_REASON = 'before-send webhook failed';
/** The deny reason when the endpoint denied without giving one. */
export const BEFORE_SEND_DENIED_REASON = 'denied by before-send webhook';

/** WebhookService defaults. */
export const DEFAULT_WEBHOOK_ATTEMPTS = 6;
export const DEFAULT_WEBHOOK_FIRST_BACKOFF_MS = 200;
export const DEFAULT_WEBHOOK_MAX_BACKOFF_MS = 5000;
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 5000;

/** Request headers. */
export const EVENT_ID_HEADER = 'x-longlink-event-id';
export const TIMESTAMP_HEADER = 'x-longlink-timestamp';
export const SIGNATURE_HEADER = 'x-longlink-signature';

const SIGNATURE_VERSION = 'v1=';
const USER_AGENT = 'longlink-webhooks/1';

// ---------------------------------------------------------------- signing

/** The signature header's value for `body` sent at `timestampSec`: `v1=<hex HMAC-SHA256(secret, "<timestampSec>.<body>")>`. */
export function signBody(secret: string, timestampSec: number, body: string): string {
  return SIGNATURE_VERSION + createHmac('sha256', secret).update(`${timestampSec}.${body}`).digest('hex');
}

/**
 * True when `headers.signature` is signBody(secret, timestamp, body) and the
 * timestamp is within `toleranceSec` of `nowSec` (either way: a replayed
 * request is refused once it is stale). The comparison is constant-time.
 * `headers` are the raw values of x-longlink-timestamp and x-longlink-signature.
 */
export function verifySignature(
  secret: string,
  headers: { timestamp?: string; signature?: string },
  body: string,
  nowSec: number = Math.floor(Date.now() / 1000),
  toleranceSec: number = DEFAULT_SIGNATURE_TOLERANCE_SEC,
): boolean {
  const { timestamp, signature } = headers;
  if (timestamp === undefined || signature === undefined || !/^\d{1,15}$/.test(timestamp)) return false;
  const ts = Number(timestamp);
  if (!(Math.abs(nowSec - ts) <= toleranceSec)) return false;
  const expected = Buffer.from(signBody(secret, ts, body));
  const given = Buffer.from(signature.trim());
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The headers of a signed webhook request. */
function signedHeaders(secret: string, eventId: string, body: string): Record<string, string> {
  const timestamp = Math.floor(Date.now() / 1000);
  return {
    'content-type': 'application/json',
    'user-agent': USER_AGENT,
    [EVENT_ID_HEADER]: eventId,
    [TIMESTAMP_HEADER]: String(timestamp),
    [SIGNATURE_HEADER]: signBody(secret, timestamp, body),
  };
}

/** Only http(s) targets (fetch would also take data: and blob: URLs). */
function checkUrl(url: string): void {
  const protocol = new URL(url).protocol;
  if (protocol !== 'http:' && protocol !== 'https:') throw new TypeError(`webhook URL scheme ${protocol} is not http(s)`);
}

/** Frees a response's connection without reading what it sent. */
async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // already closed
  }
}

/** The answer body as text, or undefined when it is over `limit` bytes (then cancelled). */
async function readLimited(res: Response, limit: number): Promise<string | undefined> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > limit) {
    await discard(res);
    return undefined;
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------- before-send

/** Where and how the before-send webhook is called. */
export interface BeforeSendConfig {
  url: string;
  /** The whole call (connect, answer, reading it) must end within this. */
  timeoutMs: number;
  /** What a failed call answers. */
  onFailure: 'allow' | 'deny';
}

/** The message as the before-send endpoint sees it (not stored yet: no seq). */
export interface BeforeSendMessage {
  conversation_id: string;
  from_user: string;
  from_device: string;
  client_msg_id: string;
  kind: 'direct' | 'group';
  text: string;
  sent_at_ms: number;
}

/** What before-send decided. `replace`: send `text` instead. */
export type BeforeSendAnswer = { action: 'allow' } | { action: 'deny'; reason: string } | { action: 'replace'; text: string };

/** A before-send call's result: the answer (the policy's when the call failed), why it failed, and how long it took. */
export interface BeforeSendOutcome {
  answer: BeforeSendAnswer;
  failed?: 'timeout' | 'status' | 'invalid' | 'network';
  ms: number;
}

/** The body of a before-send request. */
export interface BeforeSendRequest {
  id: string;
  type: 'before-send';
  created_at_ms: number;
  message: BeforeSendMessage;
}

/** Cuts a reason to MAX_REASON_CHARS characters (not splitting a surrogate pair). */
function cutReason(reason: string): string {
  if (reason.length <= MAX_REASON_CHARS) return reason;
  return Array.from(reason).slice(0, MAX_REASON_CHARS).join('');
}

/** The endpoint's answer, or undefined when it is not a valid one. */
export function parseBeforeSendAnswer(text: string): BeforeSendAnswer | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const answer = value as { action?: unknown; text?: unknown; reason?: unknown };
  switch (answer.action) {
    case 'allow':
      return { action: 'allow' };
    case 'deny': {
      if (answer.reason !== undefined && answer.reason !== null && typeof answer.reason !== 'string') return undefined;
      const reason = typeof answer.reason === 'string' && answer.reason.length > 0 ? answer.reason : BEFORE_SEND_DENIED_REASON;
      return { action: 'deny', reason: cutReason(reason) };
    }
    case 'replace':
      if (typeof answer.text !== 'string' || answer.text.length === 0) return undefined;
      return { action: 'replace', text: answer.text };
    default:
      return undefined;
  }
}

/**
 * Asks the before-send webhook about a message. Never throws: a failure
 * answers per `config.onFailure` (allow, or deny with
 * BEFORE_SEND_FAILED_REASON) with `failed` set. Redirects are not followed
 * (a 3xx is a 'status' failure): the signed body goes only to `config.url`.
 */
export async function callBeforeSend(config: BeforeSendConfig, secret: string, message: BeforeSendMessage): Promise<BeforeSendOutcome> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  const fail = (failed: NonNullable<BeforeSendOutcome['failed']>): BeforeSendOutcome => ({
    answer: config.onFailure === 'deny' ? { action: 'deny', reason: BEFORE_SEND_FAILED_REASON } : { action: 'allow' },
    failed,
    ms: elapsed(),
  });
  const timeout = AbortSignal.timeout(Math.max(1, config.timeoutMs));
  try {
    checkUrl(config.url);
    const request: BeforeSendRequest = {
      id: randomUUID(),
      type: 'before-send',
      created_at_ms: Date.now(),
      message: {
        conversation_id: message.conversation_id,
        from_user: message.from_user,
        from_device: message.from_device,
        client_msg_id: message.client_msg_id,
        kind: message.kind,
        text: message.text,
        sent_at_ms: message.sent_at_ms,
      },
    };
    const body = JSON.stringify(request);
    const res = await fetch(config.url, {
      method: 'POST', headers: signedHeaders(secret, request.id, body), body, signal: timeout, redirect: 'manual',
    });
    if (res.status < 200 || res.status > 299) {
      await discard(res);
      return fail('status');
    }
    const text = await readLimited(res, MAX_ANSWER_BYTES);
    const answer = text === undefined ? undefined : parseBeforeSendAnswer(text);
    if (!answer) return fail('invalid');
    return { answer, ms: elapsed() };
  } catch (err) {
    if (timeout.aborted || (err as Error | undefined)?.name === 'TimeoutError') return fail('timeout');
    return fail('network');
  }
}

// ---------------------------------------------------------------- after-* events

/** The after-* event types (a target subscribes to some). */
export type AfterEventType = 'after-send' | 'after-group-change' | 'after-recall' | 'after-edit' | 'after-delete';

/** Every after-* event type. */
export const AFTER_EVENT_TYPES: readonly AfterEventType[] = ['after-send', 'after-group-change', 'after-recall', 'after-edit', 'after-delete'];

/** A timeline event as an after-* body carries it. */
export interface AfterEventTimeline {
  type: TimelineEventName;
  actor: string;
  user_ids: string[];
  target_seq?: number;
  role?: GroupRoleName;
  name?: string;
  muted?: boolean;
  /** after-edit: the new text and content. */
  text?: string;
  content?: AfterEventContent;
}

/** A message's content beyond its text (Content), as after-* bodies carry it. */
export interface AfterEventContent {
  type?: string;
  /** The custom payload, base64. */
  payload?: string;
  mentions?: string[];
  mention_all?: boolean;
  reply_to_seq?: number;
  forward?: { conversation_id: string; seq: number; from_user: string };
}

/** The stored message an after-* event is about (snake_case fields of ChatMessage). */
export interface AfterEventMessage {
  conversation_id: string;
  seq: number;
  server_msg_id: string;
  from_user: string;
  from_device: string;
  client_msg_id: string;
  /** Empty for timeline events. */
  text: string;
  sent_at_ms: number;
  recalled_by?: string;
  /** Deleted for everyone by. */
  deleted_by?: string;
  content?: AfterEventContent;
  event?: AfterEventTimeline;
}

/** The body of an after-* request. */
export interface AfterEvent {
  /** `${conversation_id}:${seq}`: the same for every delivery of the same stored message. */
  id: string;
  type: AfterEventType;
  /** The message's sent_at_ms (stable across deliveries). */
  created_at_ms: number;
  message: AfterEventMessage;
}

function contentOf(c: ContentData | undefined): AfterEventContent | undefined {
  if (!c) return undefined;
  const out: AfterEventContent = {};
  if (c.type !== undefined) out.type = c.type;
  if (c.payload !== undefined) out.payload = Buffer.from(c.payload).toString('base64');
  if (c.mentions !== undefined) out.mentions = c.mentions;
  if (c.mentionAll) out.mention_all = true;
  if (c.replyToSeq !== undefined) out.reply_to_seq = c.replyToSeq;
  if (c.forward) out.forward = { conversation_id: c.forward.conversationId, seq: c.forward.seq, from_user: c.forward.fromUser };
  return out;
}

/** Timeline event types and the after-* event each is (group changes: after-group-change). */
const AFTER_OF_EVENT: Partial<Record<TimelineEventName, AfterEventType>> = { recalled: 'after-recall', edited: 'after-edit', deleted: 'after-delete' };

/**
 * The after-* event of a committed message: after-send for a plain message,
 * after-recall, after-edit and after-delete for those timeline events,
 * after-group-change for any other; undefined for an entry with no message
 * and for a user's delete for itself (its own business).
 */
export function afterEventOf(c: Committed): AfterEvent | undefined {
  if (!c.message) return undefined;
  const m = messageFromWire(c.message);
  if (m.event?.type === 'hidden') return undefined;
  const message: AfterEventMessage = {
    conversation_id: m.conversationId,
    seq: m.seq,
    server_msg_id: m.serverMsgId,
    from_user: m.fromUser,
    from_device: m.fromDevice,
    client_msg_id: m.clientMsgId,
    text: m.text,
    sent_at_ms: m.sentAtMs,
  };
  if (m.recalledBy !== undefined) message.recalled_by = m.recalledBy;
  if (m.deletedBy !== undefined) message.deleted_by = m.deletedBy;
  const content = contentOf(m.content);
  if (content) message.content = content;
  let type: AfterEventType = 'after-send';
  if (m.event) {
    type = AFTER_OF_EVENT[m.event.type] ?? 'after-group-change';
    const event: AfterEventTimeline = { type: m.event.type, actor: m.event.actor, user_ids: m.event.userIds ?? [] };
    if (m.event.targetSeq !== undefined) event.target_seq = m.event.targetSeq;
    if (m.event.role !== undefined) event.role = m.event.role;
    if (m.event.name !== undefined) event.name = m.event.name;
    if (m.event.muted !== undefined) event.muted = m.event.muted;
    if (m.event.type === 'edited') event.text = m.event.text ?? '';
    const newContent = contentOf(m.event.content);
    if (newContent) event.content = newContent;
    message.event = event;
  }
  return { id: `${m.conversationId}:${m.seq}`, type, created_at_ms: m.sentAtMs, message };
}

/** Where after-* events go, and which. */
export interface WebhookTarget {
  url: string;
  events: readonly AfterEventType[];
}

/**
 * Why an after-* event failed, a short fixed vocabulary (a metrics label):
 * `refused` — answered 4xx other than 408/429, dropped; otherwise the last
 * attempt's failure after every attempt failed: `timeout`, `status` (another
 * non-2xx), `network`. The status or error code itself is only in the log line.
 */
export type AfterFailure = 'refused' | 'timeout' | 'status' | 'network';

/** Observers of after-* delivery (metrics). They must not throw (what they throw is ignored). */
export interface WebhookHooks {
  /** An event was answered 2xx, `ms` after its first attempt began. */
  onDelivered?(type: AfterEventType, ms: number): void;
  /** An event was refused (dropped), or still failed after its attempts (deliver throws; its batch is handed again). Not called on stop. */
  onFailed?(type: AfterEventType, reason: AfterFailure): void;
  /** One try failed (it is tried again). */
  onAttemptFailed?(type: AfterEventType, reason: AfterFailure): void;
}

export interface WebhookServiceOptions {
  /** The current target, read for each batch (undefined: none configured; the batch is acked unsent). */
  target: () => WebhookTarget | undefined;
  /** The signing secret, read for each batch. */
  secret: () => Promise<string>;
  /** Tries per event before deliver throws. @default DEFAULT_WEBHOOK_ATTEMPTS (6) */
  attempts?: number;
  /** Pause before the second try, doubling after each. @default DEFAULT_WEBHOOK_FIRST_BACKOFF_MS (200) */
  firstBackoffMs?: number;
  /** The longest pause between tries. @default DEFAULT_WEBHOOK_MAX_BACKOFF_MS (5000) */
  maxBackoffMs?: number;
  /** One try's deadline. @default DEFAULT_WEBHOOK_TIMEOUT_MS (5000) */
  timeoutMs?: number;
}

/** How one try ended. */
type Attempt = { ok: true } | { ok: false; kind: AfterFailure | 'stopped'; detail: string; retryAfterMs?: number };

/** An event could not be delivered after its attempts (the batch is handed again). */
export class WebhookDeliveryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebhookDeliveryError';
  }
}

/** Pause before try `n + 1` (n ≥ 1): firstMs doubling up to maxMs, with jitter in [half, all] of it. */
export function backoffMs(n: number, firstMs: number, maxMs: number): number {
  const full = Math.min(maxMs, firstMs * 2 ** Math.min(n - 1, 30));
  return Math.round(full / 2 + Math.random() * (full / 2));
}

/** Retry-After as milliseconds (seconds form only), or undefined. */
function retryAfterMs(res: Response): number | undefined {
  const value = res.headers.get('retry-after');
  if (value === null || !/^\d{1,6}$/.test(value.trim())) return undefined;
  return Number(value.trim()) * 1000;
}

/** Why a fetch failed, without the URL or any body. */
function fetchFailure(err: unknown, stopped: boolean): Attempt {
  const e = err as { name?: string; cause?: { code?: unknown } } | undefined;
  if (stopped) return { ok: false, kind: 'stopped', detail: 'stopped' };
  if (e?.name === 'TimeoutError') return { ok: false, kind: 'timeout', detail: 'timeout' };
  const code = e?.cause?.code;
  return { ok: false, kind: 'network', detail: typeof code === 'string' ? `network: ${code}` : 'network' };
}

/**
 * Delivers after-* events to the configured target from the committed
 * stream's WEBHOOK_GROUP (see the contract at the top of this file).
 */
export class WebhookService {
  private sub: Subscription | undefined;
  private stopping = new AbortController();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly attempts: number;
  private readonly firstBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly timeoutMs: number;

  constructor(
    private readonly options: WebhookServiceOptions,
    private readonly deps: { bus: Bus },
    private readonly hooks: WebhookHooks = {},
  ) {
    this.attempts = Math.max(1, options.attempts ?? DEFAULT_WEBHOOK_ATTEMPTS);
    this.firstBackoffMs = Math.max(1, options.firstBackoffMs ?? DEFAULT_WEBHOOK_FIRST_BACKOFF_MS);
    this.maxBackoffMs = Math.max(this.firstBackoffMs, options.maxBackoffMs ?? DEFAULT_WEBHOOK_MAX_BACKOFF_MS);
    this.timeoutMs = Math.max(1, options.timeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS);
  }

  /** Joins WEBHOOK_GROUP of the committed stream. */
  start(): void {
    if (this.sub) return;
    if (this.stopping.signal.aborted) this.stopping = new AbortController();
    // What the sync service copied here from another datacenter was posted by its home's webhooks.
    this.sub = this.deps.bus.consumeCommitted(WEBHOOK_GROUP, (batch) => this.deliver(batch.filter((c) => !c.replicated)));
  }

  /**
   * Leaves the group: a delivery under way is cut short (its batch is not
   * acked, so it is handed again to the group's next owner), and stop
   * resolves once it has ended.
   */
  async stop(): Promise<void> {
    this.stopping.abort();
    const sub = this.sub;
    this.sub = undefined;
    await sub?.close();
    await Promise.allSettled([...this.inflight]);
  }

  /**
   * Posts the batch's subscribed events to the target, in order, one at a
   * time. Resolves (the bus acks) once each was delivered or refused; throws
   * when one could not be delivered after its attempts (the bus hands the
   * batch again). With no target, acks the batch unsent.
   */
  deliver(batch: readonly Committed[]): Promise<CommittedEffects | void> {
    const run = this.run(batch);
    this.inflight.add(run);
    const forget = () => this.inflight.delete(run);
    run.then(forget, forget);
    return run;
  }

  private async run(batch: readonly Committed[]): Promise<CommittedEffects> {
    const target = this.options.target();
    if (!target) return { counters: { unconfigured: batch.length } };
    const events = batch.map(afterEventOf).filter((e): e is AfterEvent => e !== undefined && target.events.includes(e.type));
    if (events.length === 0) return { counters: {} };
    checkUrl(target.url);
    const secret = await this.options.secret();
    let delivered = 0;
    let refused = 0;
    let dropped = 0;
    for (const event of events) {
      const sent = await this.send(secret, event);
      if (sent === 'delivered') delivered++;
      else if (sent === 'refused') refused++;
      else dropped++;
    }
    return { counters: { delivered, refused, ...(dropped > 0 ? { unconfigured: dropped } : {}) } };
  }

  /**
   * Sends one event until delivered or refused; throws when it gave up. The
   * target is read again before each try: an admin who fixes a wrong URL
   * gets the event at the new one; one who removes the webhook (or this
   * event type from it) ends the retries (`dropped`).
   */
  private async send(secret: string, event: AfterEvent): Promise<'delivered' | 'refused' | 'dropped'> {
    const body = JSON.stringify(event);
    const started = performance.now();
    let kind: AfterFailure = 'network';
    let detail = 'not tried';
    for (let n = 1; n <= this.attempts; n++) {
      if (this.stopping.signal.aborted) break;
      const now = this.options.target();
      if (!now || !now.events.includes(event.type)) return 'dropped';
      const url = now.url;
      checkUrl(url);
      const tried = await this.attempt(url, secret, event.id, body);
      if (tried.ok) {
        this.notify(() => this.hooks.onDelivered?.(event.type, Math.round(performance.now() - started)));
        return 'delivered';
      }
      if (tried.kind === 'stopped') break;
      if (tried.kind === 'refused') {
        log.warn({ event: event.id, type: event.type, reason: tried.detail }, 'the webhook receiver refused an event; dropped');
        this.notify(() => this.hooks.onFailed?.(event.type, 'refused'));
        return 'refused';
      }
      kind = tried.kind;
      detail = tried.detail;
      // Every failed try is counted; the log says so at the third and then every twentieth (a receiver down for long).
      this.notify(() => this.hooks.onAttemptFailed?.(event.type, tried.kind as AfterFailure));
      if (n === 3 || n % 20 === 0) log.warn({ event: event.id, type: event.type, attempt: n, reason: detail }, 'webhook receiver failing; still trying');
      else log.debug({ event: event.id, type: event.type, attempt: n, reason: detail }, 'webhook attempt failed');
      if (n < this.attempts) {
        const pause = Math.max(backoffMs(n, this.firstBackoffMs, this.maxBackoffMs), Math.min(tried.retryAfterMs ?? 0, this.maxBackoffMs));
        await this.sleep(pause);
      }
    }
    if (this.stopping.signal.aborted) throw new WebhookDeliveryError(`webhooks stopped before ${event.type} ${event.id} was delivered`);
    log.warn({ event: event.id, type: event.type, attempts: this.attempts, reason: detail }, 'webhook event not delivered; its batch will be handed again');
    this.notify(() => this.hooks.onFailed?.(event.type, kind));
    throw new WebhookDeliveryError(`webhook ${event.type} ${event.id} not delivered after ${this.attempts} attempts: ${detail}`);
  }

  /** One POST. */
  private async attempt(url: string, secret: string, eventId: string, body: string): Promise<Attempt> {
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: signedHeaders(secret, eventId, body),
        body,
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.stopping.signal]),
      });
      await discard(res);
      if (res.status >= 200 && res.status <= 299) return { ok: true };
      const detail = `HTTP ${res.status}`;
      if (res.status >= 400 && res.status <= 499 && res.status !== 408 && res.status !== 429) return { ok: false, kind: 'refused', detail };
      return { ok: false, kind: 'status', detail, retryAfterMs: retryAfterMs(res) };
    } catch (err) {
      return fetchFailure(err, this.stopping.signal.aborted);
    }
  }

  /** Waits `ms`, or less when stopped. */
  private sleep(ms: number): Promise<void> {
    const signal = this.stopping.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  private notify(call: () => void): void {
    try {
      call();
    } catch {
      // a hook's failure is not delivery's
    }
  }
}

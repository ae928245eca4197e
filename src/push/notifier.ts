// Offline push notifications: when a message reaches a user none of whose
// devices is online, a notification goes to the push providers (provider.ts:
// the business's own push service by a signed webhook, APNs, FCM).
//
// Two halves, so that neither slows the send path:
// - A consumer group of the committed stream (NOTIFY_GROUP) finds, for each
//   new message, its recipients (the conversation's members at that seq but
//   its sender; in a group of more than `largeGroupMembers`, only those it
//   mentions by name) who are offline and have not muted the conversation,
//   and queues one pending notification per (user, conversation) in the
//   store: messages that come while one waits join it (a burst collapses).
// - A loop claims the notifications that are due (`collapseMs` after a
//   burst's first message), checks again that the user is still offline,
//   and sends one notification per burst: the newest message's preview, how
//   many messages, and the user's unread count as the badge.
//
// Exactly once per message: the store records, per user and conversation,
// the seq notified last, and a message at or below it never joins a burst
// again (the committed stream may hand a message twice). A claim is a lease
// (`leaseMs`, longer than a notification's retries take): a node that dies
// mid-send leaves its claim to run out, and another node sends it then, with
// the same notification id (receivers may drop repeats by it; APNs and FCM
// replace a notification of the same collapse key). A provider that keeps
// failing past its retries loses that notification (logged, counted); the
// messages themselves are never lost, only the alert.
//
// Only the conversation's home datacenter notifies (entries copied from
// another datacenter are skipped): one notification, whichever datacenter
// the user's devices use.
import { performance } from 'node:perf_hooks';
import { NOTIFY_GROUP, type Bus, type Committed, type Subscription } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { PendingNotification, Store } from '../engines/store.js';
import { directMembers, groupIdOf, messageFromWire, type ChatMessage } from '../protocol/index.js';
import { log as rootLog } from '../observability/log.js';
import { sendWithRetry, type PushNotification, type PushProvider, type RetryOptions } from './provider.js';

const log = rootLog.child({ component: 'notifier' });

export interface NotifierOptions {
  /** A burst's first message waits this long for more before its notification goes. @default 2000 */
  collapseMs?: number;
  /** How long a claimed notification is this node's to send. @default 120_000 */
  leaseMs?: number;
  /** How often due notifications are looked for. @default 250 */
  pollMs?: number;
  /** Notifications claimed (and sent concurrently) at once. @default 50 */
  batch?: number;
  /** Groups larger than this notify only the members a message mentions by name. @default 200 */
  largeGroupMembers?: number;
  retry?: RetryOptions;
  providers: readonly PushProvider[];
}

export interface NotifierHooks {
  /** A notification was handed to a provider: its outcome. */
  onSent?(provider: string, outcome: 'delivered' | 'refused' | 'failed', seconds: number): void;
}

/** Characters of the newest message a notification shows. */
export const PREVIEW_CHARS = 100;
/** Conversations the badge counts unread messages over (the most recent ones). */
const BADGE_CONVERSATIONS = 50;

const DEFAULT_RETRY: RetryOptions = { attempts: 5, firstBackoffMs: 500, maxBackoffMs: 10_000 };

/** What a notification says of a message: its text, or what it carries. */
export function previewOf(m: ChatMessage | undefined): string {
  if (!m || m.recalledBy !== undefined || m.deletedBy !== undefined) return 'New message';
  const text = [...m.text].slice(0, PREVIEW_CHARS).join('');
  if (text !== '') return text;
  const file = m.content?.attachments?.[0];
  if (file) return file.mime.startsWith('image/') ? '[image]' : `[file] ${file.name}`;
  if (m.content?.type) return `[${m.content.type}]`;
  return 'New message';
}

export class Notifier {
  private readonly collapseMs: number;
  private readonly leaseMs: number;
  private readonly pollMs: number;
  private readonly batch: number;
  private readonly largeGroupMembers: number;
  private readonly retry: RetryOptions;
  private sub: Subscription | undefined;
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private stopped = false;
  private readonly abort = new AbortController();

  constructor(
    private readonly options: NotifierOptions,
    private readonly deps: { bus: Bus; store: Store; sessions: Sessions },
    private readonly hooks: NotifierHooks = {},
  ) {
    this.collapseMs = options.collapseMs ?? 2000;
    this.leaseMs = options.leaseMs ?? 120_000;
    this.pollMs = options.pollMs ?? 250;
    this.batch = options.batch ?? 50;
    this.largeGroupMembers = options.largeGroupMembers ?? 200;
    this.retry = { ...(options.retry ?? DEFAULT_RETRY), signal: this.abort.signal };
  }

  /** Join the committed stream's notify group and start sending what is due. Without a provider, the group acks and nothing is queued. */
  start(): void {
    this.sub = this.deps.bus.consumeCommitted(NOTIFY_GROUP, (batch) => this.queue(batch));
    if (this.options.providers.length === 0) return;
    const tick = (): void => {
      if (this.stopped) return;
      this.draining = this.drain().catch((err: unknown) => log.warn({ err }, 'sending notifications failed; trying again'))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.pollMs);
        });
    };
    this.timer = setTimeout(tick, this.pollMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    await this.sub?.close();
    await this.draining;
    await Promise.all(this.options.providers.map((p) => p.close?.()));
  }

  /** The committed messages' offline recipients join their pending notifications. */
  async queue(batch: readonly Committed[]): Promise<void> {
    if (this.options.providers.length === 0) return;
    const drafts = [];
    const dueAtMs = Date.now() + this.collapseMs;
    for (const c of batch) {
      if (!c.message || c.replicated) continue;
      const m = messageFromWire(c.message);
      if (m.event) continue;
      for (const userId of await this.offlineRecipients(m)) {
        drafts.push({ userId, conversationId: m.conversationId, seq: m.seq, fromUser: m.fromUser, dueAtMs });
      }
    }
    await this.deps.store.queueNotifications(drafts);
  }

  private async offlineRecipients(m: ChatMessage): Promise<string[]> {
    const { store, sessions } = this.deps;
    let users = directMembers(m.conversationId) ?? await store.membersAt(m.conversationId, m.seq);
    if (groupIdOf(m.conversationId) !== undefined && users.length > this.largeGroupMembers) {
      const members = new Set(users);
      users = (m.content?.mentions ?? []).filter((u) => members.has(u));
    }
    users = [...new Set(users)].filter((u) => u !== m.fromUser);
    if (users.length === 0) return [];
    const online = await sessions.lookup(users);
    users = users.filter((u) => !online.has(u));
    if (users.length === 0) return [];
    const muted = await store.notifyMuted(m.conversationId, users);
    return users.filter((u) => !muted.has(u));
  }

  /** Sends every notification due now (a claimed batch at a time). */
  async drain(): Promise<void> {
    for (;;) {
      if (this.stopped) return;
      const due = await this.deps.store.claimNotifications(Date.now(), this.batch, this.leaseMs);
      await Promise.all(due.map((n) => this.send(n)));
      if (due.length < this.batch) return;
    }
  }

  private async send(n: PendingNotification): Promise<void> {
    const { store, sessions } = this.deps;
    try {
      // Back online since: its devices have the messages; nothing to alert.
      if (!(await sessions.lookup([n.userId])).has(n.userId)) {
        const notification = await this.notification(n);
        const devices = (await store.pushDevices([n.userId])).get(n.userId) ?? [];
        await Promise.all(this.options.providers.map(async (provider) => {
          const mine = devices.filter((d) => provider.handles(d.platform));
          if (mine.length === 0 && !provider.everyUser) return;
          const start = performance.now();
          const result = await sendWithRetry(provider, { ...notification, devices: mine.map(({ deviceId, platform, token }) => ({ deviceId, platform, token })) }, this.retry);
          this.hooks.onSent?.(provider.name, result.outcome, (performance.now() - start) / 1000);
          if (result.outcome !== 'delivered') log.warn({ provider: provider.name, outcome: result.outcome, attempts: result.attempts }, 'a push notification was not delivered');
          for (const token of result.invalidTokens) {
            const device = mine.find((d) => d.token === token);
            if (device) await store.removePushDevice(n.userId, device.deviceId, token);
          }
        }));
      }
      await store.finishNotification(n, Date.now() + this.collapseMs);
    } catch (err) {
      // The claim runs out and the notification is tried again then.
      log.warn({ err }, 'a push notification failed; it is tried again when its claim runs out');
    }
  }

  private async notification(n: PendingNotification): Promise<PushNotification> {
    const { store } = this.deps;
    const [newest, page, profiles] = await Promise.all([
      store.message(n.conversationId, n.lastSeq),
      store.conversationPage(n.userId, BADGE_CONVERSATIONS, undefined, 0),
      store.profiles([n.fromUser]),
    ]);
    const groupId = groupIdOf(n.conversationId);
    const sender = profiles.get(n.fromUser)?.name || n.fromUser;
    const group = groupId !== undefined ? (await store.groupMeta(groupId))?.name : undefined;
    const preview = previewOf(newest);
    return {
      id: `${n.userId}:${n.conversationId}:${n.lastSeq}`,
      userId: n.userId,
      conversationId: n.conversationId,
      lastSeq: n.lastSeq,
      count: n.count,
      fromUser: n.fromUser,
      title: [...(group ? `${sender} in ${group}` : sender)].slice(0, 100).join(''),
      body: n.count > 1 ? `(${n.count}) ${preview}` : preview,
      badge: page.reduce((sum, c) => sum + c.unread, 0),
      devices: [],
      sentAtMs: newest?.sentAtMs ?? Date.now(),
    };
  }
}

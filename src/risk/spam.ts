// Spam scoring, by the risk service, on what was committed (after the fact:
// the send path never waits for it).
//
// Three rules, each a sliding window per user, configured in the rules
// document's `spam` section (src/risk/rules.ts):
// - same_text: the same text (normalised as the content rules see it, at
//   least MIN_SAME_TEXT characters) into N distinct conversations;
// - new_conversations: N new 1:1 conversations opened (the user's message is
//   the conversation's first, seq 1);
// - links_from_new_users: N messages holding links from a user the risk
//   service first saw less than account_age_ms ago (first seen: the store).
//
// A window is a set of members (`conversation#seq`) with their times, kept in
// Windows: in memory in one process, in Redis sorted sets in a cluster, where
// several risk processes each read some shards of the committed stream and a
// user's messages spread over them.
import { createHash } from 'node:crypto';
import { isGroupConversation, SYSTEM_USER, type ChatMessage } from '../protocol/index.js';
import type { RiskStore } from '../engines/store.js';
import { Script, engineClient, type RedisClient, type RedisConnectionOptions } from '../engines/redis-shared.js';
import { linksIn, normalize } from './matcher.js';
import type { RulesDocument } from './rules.js';

/** Texts shorter than this (normalised, in characters) are not counted by same_text: "ok" and "hi" are not spam. */
export const MIN_SAME_TEXT = 4;
/** Members kept per window at most (the newest): a rule's threshold is at most this. */
export const MAX_WINDOW_MEMBERS = 1000;
/** Windows kept in memory at most (MemoryWindows); the least recently touched go first. */
const MAX_WINDOWS = 100_000;

export type SpamRules = NonNullable<RulesDocument['spam']>;
export type SpamRule = 'spam_same_text' | 'spam_new_conversations' | 'spam_links_new_user';

/** A message the risk service saw: where it is. */
export interface MessageRef {
  conversationId: string;
  seq: number;
}

/** A rule tripped by a user: what it counted, in its window. */
export interface Trip {
  rule: SpamRule;
  userId: string;
  /** The messages in the window that count against the user (the evidence, and what `recall` takes back). */
  messages: MessageRef[];
  /** What the rule counted (distinct conversations, or messages) and its threshold. */
  count: number;
  threshold: number;
  windowMs: number;
}

/** Sliding windows of members per key. */
export interface Windows {
  /** Add `member` at `atMs` to window `key` (the last `windowMs`); the members in it now, oldest first (at most MAX_WINDOW_MEMBERS). */
  add(key: string, member: string, atMs: number, windowMs: number): Promise<string[]>;
  /** Take `key` for `ttlMs` if no one holds it: true for the one caller (of every process sharing the windows) that took it. */
  claim(key: string, ttlMs: number): Promise<boolean>;
  /** Give `key` back (what its claim was for failed). */
  release(key: string): Promise<void>;
  close(): Promise<void>;
}

export class MemoryWindows implements Windows {
  private readonly windows = new Map<string, Map<string, number>>();

  async add(key: string, member: string, atMs: number, windowMs: number): Promise<string[]> {
    let w = this.windows.get(key);
    this.windows.delete(key);
    if (!w) {
      w = new Map();
      if (this.windows.size >= MAX_WINDOWS) this.windows.delete(this.windows.keys().next().value!);
    }
    this.windows.set(key, w);
    w.delete(member);
    w.set(member, atMs);
    for (const [m, at] of w) {
      if (at > atMs - windowMs && w.size <= MAX_WINDOW_MEMBERS) break;
      w.delete(m);
    }
    return [...w.keys()];
  }

  private readonly claims = new Map<string, number>();

  async claim(key: string, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    const until = this.claims.get(key);
    if (until !== undefined && until > now) return false;
    if (this.claims.size >= MAX_WINDOWS) {
      for (const [k, u] of this.claims) if (u <= now) this.claims.delete(k);
      if (this.claims.size >= MAX_WINDOWS) this.claims.delete(this.claims.keys().next().value!);
    }
    this.claims.set(key, now + ttlMs);
    return true;
  }

  async release(key: string): Promise<void> {
    this.claims.delete(key);
  }

  async close(): Promise<void> {
    this.windows.clear();
    this.claims.clear();
  }
}

// KEYS[1] window; ARGV: member, atMs, windowMs, max members. Members scored by time; expired and overflow trimmed; the key expires with its window.
const ADD = new Script(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
local n = redis.call('ZCARD', KEYS[1])
if n > tonumber(ARGV[4]) then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - tonumber(ARGV[4]) - 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZRANGE', KEYS[1], 0, -1)
`);

export class RedisWindows implements Windows {
  private readonly client: RedisClient;
  private readonly owned: boolean;
  private readonly prefix: string;

  constructor(client: RedisClient | RedisConnectionOptions, prefix?: string) {
    ({ client: this.client, owned: this.owned, prefix: this.prefix } = engineClient(client, prefix));
  }

  async add(key: string, member: string, atMs: number, windowMs: number): Promise<string[]> {
    return await ADD.run(this.client, [`${this.prefix}risk:w:${key}`], [member, atMs, windowMs, MAX_WINDOW_MEMBERS]) as string[];
  }

  async claim(key: string, ttlMs: number): Promise<boolean> {
    return (await this.client.set(`${this.prefix}risk:claim:${key}`, '1', 'PX', Math.max(1, Math.round(ttlMs)), 'NX')) === 'OK';
  }

  async release(key: string): Promise<void> {
    await this.client.del(`${this.prefix}risk:claim:${key}`);
  }

  async close(): Promise<void> {
    if (this.owned) await this.client.quit().catch(() => undefined);
  }
}

/** Users whose first-seen time is kept in memory at most (SpamScorer). */
const MAX_FIRST_SEEN = 100_000;

/** The spam rules on batches of committed messages. */
export class SpamScorer {
  /** First-seen times already read from (or written to) the store. */
  private readonly firstSeen = new Map<string, number>();

  constructor(private readonly deps: { windows: Windows; store: RiskStore }) {}

  /**
   * Every sender's first-seen time is recorded (whatever the rules, so an
   * account's age is right when the rule is turned on later); then the rules
   * tripped by the batch, one per user and rule at most.
   */
  async score(rules: SpamRules | undefined, messages: readonly ChatMessage[], nowMs: number): Promise<Trip[]> {
    const sent = messages.filter((m) => !m.event && m.fromUser !== SYSTEM_USER && m.recalledBy === undefined);
    if (sent.length === 0) return [];
    await this.recordSenders(sent, Math.min(nowMs, ...sent.map((m) => (m.sentAtMs > 0 ? m.sentAtMs : nowMs))));
    if (!rules) return [];
    const trips = new Map<string, Trip>();
    const trip = (t: Trip) => trips.set(`${t.userId}\n${t.rule}`, t);
    const windows = this.deps.windows;
    for (const m of sent) {
      const member = `${m.conversationId}#${m.seq}`;
      // When it was sent, not when it is read: a risk service catching up after an outage sees a burst as the burst it was.
      const at = m.sentAtMs > 0 ? m.sentAtMs : nowMs;
      const same = rules.same_text;
      if (same) {
        const text = normalize(m.text).text.trim();
        if ([...text].length >= MIN_SAME_TEXT) {
          const hash = createHash('sha256').update(text).digest('base64url').slice(0, 22);
          const inWindow = await windows.add(`same:${m.fromUser}:${hash}`, member, at, same.window_ms);
          const conversations = new Set(inWindow.map((x) => refOf(x).conversationId)).size;
          if (conversations >= same.conversations) {
            trip({ rule: 'spam_same_text', userId: m.fromUser, messages: inWindow.map(refOf), count: conversations, threshold: same.conversations, windowMs: same.window_ms });
          }
        }
      }
      const opened = rules.new_conversations;
      if (opened && m.seq === 1 && !isGroupConversation(m.conversationId)) {
        const inWindow = await windows.add(`new:${m.fromUser}`, member, at, opened.window_ms);
        if (inWindow.length >= opened.count) {
          trip({ rule: 'spam_new_conversations', userId: m.fromUser, messages: inWindow.map(refOf), count: inWindow.length, threshold: opened.count, windowMs: opened.window_ms });
        }
      }
      const links = rules.links_from_new_users;
      const seen = this.firstSeen.get(m.fromUser);
      if (links && seen !== undefined && at - seen < links.account_age_ms && linksIn(m.text).length > 0) {
        const inWindow = await windows.add(`links:${m.fromUser}`, member, at, links.window_ms);
        if (inWindow.length >= links.count) {
          trip({ rule: 'spam_links_new_user', userId: m.fromUser, messages: inWindow.map(refOf), count: inWindow.length, threshold: links.count, windowMs: links.window_ms });
        }
      }
    }
    return [...trips.values()];
  }

  private async recordSenders(sent: readonly ChatMessage[], nowMs: number): Promise<void> {
    const unknown = [...new Set(sent.map((m) => m.fromUser))].filter((u) => !this.firstSeen.has(u));
    if (unknown.length === 0) return;
    for (const [user, at] of await this.deps.store.firstSeen(unknown, nowMs)) {
      if (this.firstSeen.size >= MAX_FIRST_SEEN) this.firstSeen.delete(this.firstSeen.keys().next().value!);
      this.firstSeen.set(user, at);
    }
  }
}

function refOf(member: string): MessageRef {
  const at = member.lastIndexOf('#');
  return { conversationId: member.slice(0, at), seq: Number(member.slice(at + 1)) };
}

// Risk control on every node: the rules in force, and the check of every send
// before it is stored (the send path's ContentFilter).
//
// The rules are one JSON document (src/risk/rules.ts) in the store, put by an
// admin (PUT /api/v1/risk/rules) and versioned: each node reads the version
// every POLL_MS and, when it moved, loads and compiles the new document, so a
// change takes effect everywhere within a second with no restart. A document
// is validated where it is put; one that fails (a bad regex, an empty list) is
// refused and the previous rules stay.
//
// The check, in order: the word lists, regexes and link rule (block wins over
// mask), then the business's before-send webhook (allow, deny, or replace the
// text; a timeout or a bad answer is decided by its on_failure policy), whose
// replacement is checked by the rules again. A refusal is CONTENT_BLOCKED
// naming the rule, never the words; nothing is stored or pushed.
import { randomBytes } from 'node:crypto';
import { ErrorCode, LonglinkError } from '../protocol/index.js';
import type { MessageDraft, RiskAuditEntry, RiskStore } from '../engines/store.js';
import type { RiskMetrics } from '../observability/metrics.js';
import { log as rootLog } from '../observability/log.js';
import { ContentRules, type Verdict } from './matcher.js';
import { MAX_RULES_BYTES, RulesError, parseRules, type RulesDocument } from './rules.js';
import { callBeforeSend } from './webhooks.js';
import { Periodic } from '../periodic.js';

const log = rootLog.child({ component: 'risk' });

/** How often each node looks for a new version of the rules. */
export const POLL_MS = 500;
/** Before-send calls in flight at once from one process (a batch of sends waits for its turn rather than open hundreds of connections). */
export const BEFORE_SEND_IN_FLIGHT = 64;

/** At most `limit` tasks run at once; the others wait in order. */
class Limiter {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    this.running++;
    try {
      return await task();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

/** The rules in force on this node. */
interface InForce {
  version: number;
  updatedAtMs: number;
  document: RulesDocument;
  content: ContentRules;
}

const NONE: InForce = { version: 0, updatedAtMs: 0, document: {}, content: new ContentRules({}) };

export class RiskControl {
  private current = NONE;
  /** Looks for a new version of the rules (a poll never fails: it logs and keeps the current rules). */
  private readonly polls: Periodic;
  private secretKept: Promise<string> | undefined;
  private readonly hookCalls = new Limiter(BEFORE_SEND_IN_FLIGHT);
  /** A stored version this server cannot read (put by a newer one): not read again. */
  private unreadable = 0;
  /** The last poll could not read the store. */
  private failing = false;

  constructor(
    private readonly options: { maxTextBytes: number; pollMs?: number },
    private readonly deps: { store: RiskStore; metrics?: RiskMetrics },
  ) {
    this.polls = new Periodic(options.pollMs ?? POLL_MS, () => this.poll(), () => undefined);
  }

  /** Load the rules, then look for new versions every POLL_MS. */
  async start(): Promise<void> {
    await this.polls.now();
    this.polls.start();
  }

  stop(): Promise<void> {
    return this.polls.stop();
  }

  /** The document in force here, its version and when it was put. */
  get rules(): { version: number; updatedAtMs: number; document: RulesDocument } {
    const { version, updatedAtMs, document } = this.current;
    return { version, updatedAtMs, document };
  }

  /**
   * Replace the rules: validated and compiled first (RulesError says what is
   * wrong, and nothing changes), then stored; in force here at once and on
   * every other node at its next poll.
   */
  async put(json: unknown): Promise<{ version: number; document: RulesDocument }> {
    const document = parseRules(json);
    const text = JSON.stringify(document);
    if (Buffer.byteLength(text) > MAX_RULES_BYTES) throw new RulesError(`the rules are over ${MAX_RULES_BYTES} bytes`);
    const content = new ContentRules(document);
    const version = await this.deps.store.putRiskRules(text, Date.now());
    if (version > this.current.version) this.current = { version, updatedAtMs: Date.now(), document, content };
    return { version, document };
  }

  /** The audit trail, newest first (GET /api/v1/risk/audit). */
  audit(query: { limit: number; beforeId?: number; userId?: string }): Promise<RiskAuditEntry[]> {
    return this.deps.store.riskAudit(query);
  }

  /** The secret every webhook request is signed with: one for the whole cluster, made on first use and kept in the store. */
  webhookSecret(): Promise<string> {
    this.secretKept ??= this.deps.store.webhookSecret(randomBytes(32).toString('base64url')).catch((err: unknown) => {
      this.secretKept = undefined;
      throw err;
    });
    return this.secretKept;
  }

  /** The send path's check (Pipeline's ContentFilter): the text to store instead, undefined to keep it, or a throw to refuse. */
  readonly filter = async (draft: Readonly<MessageDraft>): Promise<string | undefined> => {
    if (draft.event) return undefined;
    const { content, document } = this.current;
    let text = await this.apply(content, draft.text);
    const hook = document.before_send_webhook;
    if (hook) {
      const secret = await this.webhookSecret();
      const outcome = await this.hookCalls.run(() => callBeforeSend(
        { url: hook.url, timeoutMs: hook.timeout_ms ?? 500, onFailure: hook.on_failure ?? 'allow' },
        secret,
        {
          conversation_id: draft.conversationId, from_user: draft.fromUser, from_device: draft.fromDevice, client_msg_id: draft.clientMsgId,
          kind: draft.kind === 'group' ? 'group' : 'direct', text, sent_at_ms: draft.sentAtMs,
        },
      ));
      this.deps.metrics?.webhook('before-send', outcome.ms / 1000, outcome.failed);
      const answer = outcome.answer;
      if (answer.action === 'deny') {
        this.deps.metrics?.blocked('before_send_webhook');
        throw new LonglinkError(ErrorCode.CONTENT_BLOCKED, `blocked by rule "before_send_webhook": ${answer.reason}`);
      }
      if (answer.action === 'replace') {
        if (Buffer.byteLength(answer.text) > this.options.maxTextBytes || answer.text.includes('\u0000')) {
          // A replacement no store may hold (too long, or with NUL, which PostgreSQL refuses): the hook failed, and its policy decides.
          this.deps.metrics?.webhook('before-send', undefined, 'invalid');
          if ((hook.on_failure ?? 'allow') === 'deny') {
            this.deps.metrics?.blocked('before_send_webhook');
            throw new LonglinkError(ErrorCode.CONTENT_BLOCKED, 'blocked by rule "before_send_webhook": before-send webhook failed');
          }
        } else {
          // The business's text is checked by the rules too.
          text = await this.apply(content, answer.text);
        }
      }
    }
    return text === draft.text ? undefined : text;
  };

  /** The content rules on one text: the text to keep (masked or not), or a throw. */
  private async apply(content: ContentRules, text: string): Promise<string> {
    if (content.empty) return text;
    const verdict = content.budgeted ? await this.checkInBatch(content, text) : content.check(text);
    if (verdict.action === 'block') {
      this.deps.metrics?.blocked(verdict.rule);
      throw new LonglinkError(ErrorCode.CONTENT_BLOCKED, `blocked by rule "${verdict.rule}"`);
    }
    if (verdict.action === 'mask') {
      for (const rule of verdict.rules) this.deps.metrics?.masked(rule);
      return verdict.text;
    }
    return text;
  }

  /** Texts waiting for the budgeted regex rules, checked together at the next turn of the event loop (one deadline for all). */
  private waiting: { content: ContentRules; text: string; done: (v: Verdict) => void; failed: (err: unknown) => void }[] = [];

  private checkInBatch(content: ContentRules, text: string): Promise<Verdict> {
    return new Promise((done, failed) => {
      this.waiting.push({ content, text, done, failed });
      if (this.waiting.length === 1) setImmediate(() => this.checkWaiting());
    });
  }

  private checkWaiting(): void {
    const batch = this.waiting;
    this.waiting = [];
    for (const content of new Set(batch.map((w) => w.content))) {
      const same = batch.filter((w) => w.content === content);
      try {
        const verdicts = content.checkMany(same.map((w) => w.text));
        same.forEach((w, i) => w.done(verdicts[i]!));
      } catch (err) {
        for (const w of same) w.failed(err);
      }
    }
  }

  /** Load the stored rules if their version moved. A document that does not parse here (put by a newer server) keeps the current rules. */
  private async poll(): Promise<void> {
    try {
      const version = await this.deps.store.riskRulesVersion();
      this.failing = false;
      if (version <= this.current.version) return;
      if (version === this.unreadable) return;
      const record = await this.deps.store.riskRules();
      if (!record || record.version <= this.current.version) return;
      let document: RulesDocument;
      let content: ContentRules;
      try {
        document = parseRules(JSON.parse(record.document));
        content = new ContentRules(document);
      } catch (err) {
        this.unreadable = record.version;
        log.error({ err, version: record.version }, 'the stored risk rules do not parse here; the current ones stay');
        return;
      }
      this.current = { version: record.version, updatedAtMs: record.updatedAtMs, document, content };
      log.info({ version: record.version }, 'risk rules loaded');
    } catch (err) {
      // Once per outage, not at every poll.
      if (!this.failing) log.warn({ err }, 'could not read the risk rules; the current ones stay until the store answers');
      this.failing = true;
    }
  }
}

// SQLite store (better-sqlite3) for the embedded server. WAL mode; one write
// transaction per append batch, so throughput is not one flush per message.
//
// Layout: `messages` is keyed by an INTEGER rowid that only grows, so inserts
// append to the end of the table's B-tree; (conversation_id, seq) and
// (from_user, client_msg_id) are small secondary indexes. Rows clustered by
// (conversation, seq) would be inserted at random places (5x slower here).
import Database from 'better-sqlite3';
import { closeSync, fdatasync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { ChatMessage, GroupRoleName, ReactionData } from '../protocol/index.js';
import { directMembers, directPeer } from '../protocol/ids.js';
import {
  WEBHOOK_SECRET_KEY, contentJson, draftMessage, effectOfEvent, eventJson, mentionedIn, homeOf, type HomeRow, groupIdOf, toMessage, toRiskAuditEntry, toState, type MessageRow, type RiskAuditRow, type StateColumns,
} from './store-rows.js';
import {
  CHANGE_ALWAYS, CHANGE_FANOUT_MAX, FencedError, PAST_WINDOWS_MAX, StoreDataError, StoreUnavailableError, UNREAD_COUNT_MAX, withTypedErrors,
  type AppendResult, type ConversationCursor, type ConversationHead, type ReplicaEntry, type HomeRecord, type MarkChanges, type ConversationChange, type ConversationOverview, type ConversationState, type DeliveredMark, type Effect, type GroupMeta, type GroupRecord, type Membership,
  type MessageDraft, type ProfileRecord, type FileRecord, type SearchQuery, type PushDeviceRecord, type NotificationDraft, type PendingNotification, type ReactionLimits, type RiskAuditDraft, type RiskAuditEntry, type RiskRulesRecord, type Store, type SyncConversation, type SyncPosition, type SyncReadOptions, type SyncScan, type MemberWindow,
} from './store.js';
import { log } from '../observability/log.js';
import { SqliteFeatures } from './sqlite-features.js';

const logger = log.child({ component: 'store' });

export interface SqliteStoreOptions {
  /** File path, or ':memory:'. */
  path: string;
  /**
   * 'full': a commit survives power loss (the WAL is flushed before append
   * resolves, one flush shared by every commit waiting for it); 'normal':
   * a commit survives a process crash. @default 'full'
   */
  synchronous?: 'full' | 'normal';
  /**
   * The change slack (store.ts, "Sync"), in change numbers (one per
   * transaction that stores messages: appends, copies, retention batches): a
   * membership whose change number is within
   * it of a writer's is not written again, and a sync token stays this far
   * behind the last change. Tests use 0. @default SQLITE_CHANGE_SLACK
   */
  changeSlack?: number;
}

/**
 * The default change slack: 4,096 change numbers (appends, mostly: each a
 * batch). A member row of a conversation that stays busy is written about
 * once per slack; a sync reads again the user's memberships changed within
 * it.
 */
export const SQLITE_CHANGE_SLACK = 4096;

const MIGRATIONS: string[] = [
  `CREATE TABLE conversations (
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL,
     last_seq INTEGER NOT NULL DEFAULT 0,
     last_at_ms INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   CREATE TABLE members (
     user_id TEXT NOT NULL,
     conversation_id TEXT NOT NULL,
     joined_at_ms INTEGER NOT NULL,
     PRIMARY KEY (user_id, conversation_id)
   ) WITHOUT ROWID;
   CREATE INDEX members_by_conversation ON members (conversation_id);
   CREATE TABLE messages (
     id INTEGER PRIMARY KEY,
     conversation_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     server_msg_id TEXT NOT NULL,
     from_user TEXT NOT NULL,
     from_device TEXT NOT NULL,
     client_msg_id TEXT NOT NULL,
     text TEXT NOT NULL,
     sent_at_ms INTEGER NOT NULL
   );
   CREATE UNIQUE INDEX messages_by_seq ON messages (conversation_id, seq);
   CREATE UNIQUE INDEX messages_by_client_id ON messages (from_user, client_msg_id) WHERE client_msg_id <> '';
   CREATE TABLE device_cursors (
     user_id TEXT NOT NULL,
     device_id TEXT NOT NULL,
     conversation_id TEXT NOT NULL,
     delivered_seq INTEGER NOT NULL,
     PRIMARY KEY (user_id, device_id, conversation_id)
   ) WITHOUT ROWID;`,
  // Groups: roles, mutes, visibility windows (joined_seq..left_seq), read cursors, events, recall.
  `ALTER TABLE members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
   ALTER TABLE members ADD COLUMN muted INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE members ADD COLUMN joined_seq INTEGER NOT NULL DEFAULT 1;
   ALTER TABLE members ADD COLUMN left_seq INTEGER;
   ALTER TABLE members ADD COLUMN read_seq INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE messages ADD COLUMN event TEXT;
   ALTER TABLE messages ADD COLUMN recalled_by TEXT;
   CREATE TABLE groups (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     owner TEXT NOT NULL,
     muted_all INTEGER NOT NULL DEFAULT 0,
     dismissed INTEGER NOT NULL DEFAULT 0,
     created_at_ms INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // Earlier membership windows of users who left a group and joined it again.
  `CREATE TABLE member_windows (
     conversation_id TEXT NOT NULL,
     user_id TEXT NOT NULL,
     joined_seq INTEGER NOT NULL,
     left_seq INTEGER NOT NULL,
     PRIMARY KEY (conversation_id, user_id, joined_seq)
   ) WITHOUT ROWID;`,
  // Whether a member has written in the conversation (a message or an action): who counts as a contact.
  `ALTER TABLE members ADD COLUMN wrote INTEGER NOT NULL DEFAULT 0;
   UPDATE members SET wrote = 1 WHERE (conversation_id, user_id) IN (SELECT DISTINCT conversation_id, from_user FROM messages);`,
  // 1:1 delivered marks: each member's highest device cursor ("delivered" for the other side).
  `ALTER TABLE members ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0;
   UPDATE members SET delivered_seq = coalesce((SELECT max(d.delivered_seq) FROM device_cursors d
     WHERE d.user_id = members.user_id AND d.conversation_id = members.conversation_id), 0)
   WHERE conversation_id >= 'u:' AND conversation_id < 'u;';`,
  // Retention: the first seq a conversation still holds (every lower one expired; see store.ts).
  `ALTER TABLE conversations ADD COLUMN retained_from_seq INTEGER NOT NULL DEFAULT 1;`,
  // Risk control: the rules document (one row), its audit trail, shared settings (the webhook secret), first-seen times.
  `CREATE TABLE risk_rules (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     version INTEGER NOT NULL,
     document TEXT NOT NULL,
     updated_at_ms INTEGER NOT NULL
   );
   CREATE TABLE risk_audit (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     at_ms INTEGER NOT NULL,
     user_id TEXT NOT NULL,
     rule TEXT NOT NULL,
     action TEXT NOT NULL,
     detail TEXT NOT NULL
   );
   CREATE INDEX risk_audit_by_user ON risk_audit (user_id, id);
   CREATE TABLE settings (
     key TEXT PRIMARY KEY,
     value TEXT NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE risk_first_seen (
     user_id TEXT PRIMARY KEY,
     first_seen_ms INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // Datacenters: the home of a conversation copied from another one ('' for one created here).
  `ALTER TABLE conversations ADD COLUMN home_dc TEXT NOT NULL DEFAULT '';
   CREATE INDEX conversations_by_activity ON conversations (last_at_ms);
   CREATE TABLE dc_homes (
     dc TEXT PRIMARY KEY,
     served_by TEXT NOT NULL,
     epoch INTEGER NOT NULL,
     state TEXT NOT NULL,
     changed_at_ms INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE orphaned_messages (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     orphaned_at_ms INTEGER NOT NULL,
     conversation_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     server_msg_id TEXT NOT NULL,
     from_user TEXT NOT NULL,
     from_device TEXT NOT NULL,
     client_msg_id TEXT NOT NULL,
     text TEXT NOT NULL,
     sent_at_ms INTEGER NOT NULL,
     event TEXT,
     recalled_by TEXT
   );`,
  // Datacenters: read marks, delivered cursors and revocations stamped when they change here (the others copy them).
  `ALTER TABLE members ADD COLUMN read_at_ms INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX members_by_read_change ON members (read_at_ms) WHERE read_at_ms > 0;
   ALTER TABLE device_cursors ADD COLUMN at_ms INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX device_cursors_by_change ON device_cursors (at_ms) WHERE at_ms > 0;
   CREATE TABLE revocations (
     user_id TEXT NOT NULL,
     device_id TEXT NOT NULL,
     before_ms INTEGER NOT NULL,
     at_ms INTEGER NOT NULL,
     PRIMARY KEY (user_id, device_id)
   ) WITHOUT ROWID;
   CREATE INDEX revocations_by_change ON revocations (at_ms) WHERE at_ms > 0;
   CREATE TABLE dc_state (
     key TEXT PRIMARY KEY,
     value TEXT NOT NULL
   ) WITHOUT ROWID;`,
  // Sync: the per-user change index (store.ts, "Sync"): each membership's change number, in change order per user
  // (0 for what was there before: a device's first sync reads it all once), each device's position in that order,
  // the groups too large to be written to on every message (their members' rows always read), and the counter
  // change numbers come from (one per write transaction; this process is the only writer).
  `ALTER TABLE members ADD COLUMN change_no INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE conversations ADD COLUMN fanout INTEGER NOT NULL DEFAULT 1;
   UPDATE conversations SET fanout = 0 WHERE id IN (SELECT conversation_id FROM members WHERE left_seq IS NULL
     GROUP BY conversation_id HAVING count(*) > ${CHANGE_FANOUT_MAX});
   UPDATE members SET change_no = ${CHANGE_ALWAYS}
     WHERE left_seq IS NULL AND conversation_id IN (SELECT id FROM conversations WHERE fanout = 0);
   CREATE INDEX members_by_change ON members (user_id, change_no, conversation_id);
   CREATE TABLE device_sync (
     user_id TEXT NOT NULL,
     device_id TEXT NOT NULL,
     change_no INTEGER NOT NULL,
     conversation_id TEXT NOT NULL,
     PRIMARY KEY (user_id, device_id)
   ) WITHOUT ROWID;
   CREATE TABLE change_clock (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     n INTEGER NOT NULL
   );
   INSERT INTO change_clock (id, n) VALUES (1, 0);`,
  // Sync tokens held by clients (store.ts, "Sync") replace the devices' positions in device_sync, which this version
  // neither reads nor writes (the table stays, as on PostgreSQL: a later version drops it). A conversation's
  // members_change_no: at or below the change number of every member row a write there must change (see changed());
  // 0, before this migration: its member rows are written at its next write.
  `ALTER TABLE conversations ADD COLUMN members_change_no INTEGER NOT NULL DEFAULT 0;`,
  // Rich messages: content parts, edit time and tombstone (store-rows.ts, contentJson), the mentions index behind a
  // conversation's "mentioned" flag ('*': everyone), and who blocks whom.
  `ALTER TABLE messages ADD COLUMN content TEXT;
   ALTER TABLE orphaned_messages ADD COLUMN content TEXT;
   CREATE TABLE mentions (
     conversation_id TEXT NOT NULL,
     user_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     PRIMARY KEY (conversation_id, user_id, seq)
   ) WITHOUT ROWID;
   CREATE TABLE blocks (
     user_id TEXT NOT NULL,
     blocked_id TEXT NOT NULL,
     at_ms INTEGER NOT NULL,
     PRIMARY KEY (user_id, blocked_id)
   ) WITHOUT ROWID;
   CREATE TABLE reactions (
     conversation_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     emoji TEXT NOT NULL,
     user_id TEXT NOT NULL,
     at_ms INTEGER NOT NULL,
     PRIMARY KEY (conversation_id, seq, emoji, user_id)
   ) WITHOUT ROWID;
   CREATE INDEX reactions_in_order ON reactions (conversation_id, seq, emoji, at_ms, user_id);
   CREATE INDEX reactions_by_user ON reactions (conversation_id, seq, user_id);
   CREATE TABLE reaction_counts (
     conversation_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     emoji TEXT NOT NULL,
     n INTEGER NOT NULL,
     first_at_ms INTEGER NOT NULL,
     PRIMARY KEY (conversation_id, seq, emoji)
   ) WITHOUT ROWID;
   CREATE TABLE hidden (
     user_id TEXT NOT NULL,
     conversation_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     PRIMARY KEY (user_id, conversation_id, seq)
   ) WITHOUT ROWID;
   CREATE INDEX hidden_by_conversation ON hidden (conversation_id, seq);
   CREATE TABLE profiles (
     user_id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     avatar_url TEXT NOT NULL,
     updated_at_ms INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // Files, search and offline push notifications (sqlite-features.ts): uploads and the messages holding them, the
  // full-text index (its rowid is the message's), push tokens, notification mutes, the bursts waiting to be notified
  // and how far each user was notified in each conversation.
  `CREATE TABLE files (
     id TEXT PRIMARY KEY,
     owner_id TEXT NOT NULL,
     name TEXT NOT NULL,
     mime TEXT NOT NULL,
     size INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     width INTEGER NOT NULL,
     height INTEGER NOT NULL,
     has_preview INTEGER NOT NULL,
     created_at_ms INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX files_by_owner ON files (owner_id, created_at_ms);
   CREATE TABLE file_refs (
     file_id TEXT NOT NULL,
     conversation_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     PRIMARY KEY (file_id, conversation_id, seq)
   ) WITHOUT ROWID;
   CREATE VIRTUAL TABLE search_fts USING fts5(text, conversation_id UNINDEXED, seq UNINDEXED, tokenize = 'unicode61 remove_diacritics 2');
   CREATE TABLE push_devices (
     user_id TEXT NOT NULL,
     device_id TEXT NOT NULL,
     platform TEXT NOT NULL,
     token TEXT NOT NULL,
     updated_at_ms INTEGER NOT NULL,
     PRIMARY KEY (user_id, device_id)
   ) WITHOUT ROWID;
   CREATE INDEX push_devices_by_token ON push_devices (token);
   CREATE TABLE notify_mutes (
     conversation_id TEXT NOT NULL,
     user_id TEXT NOT NULL,
     PRIMARY KEY (conversation_id, user_id)
   ) WITHOUT ROWID;
   CREATE TABLE notify_marks (
     user_id TEXT NOT NULL,
     conversation_id TEXT NOT NULL,
     notified_seq INTEGER NOT NULL,
     PRIMARY KEY (user_id, conversation_id)
   ) WITHOUT ROWID;
   CREATE TABLE notify_pending (
     user_id TEXT NOT NULL,
     conversation_id TEXT NOT NULL,
     first_seq INTEGER NOT NULL,
     last_seq INTEGER NOT NULL,
     count INTEGER NOT NULL,
     from_user TEXT NOT NULL,
     due_at_ms INTEGER NOT NULL,
     claimed_until_ms INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (user_id, conversation_id)
   ) WITHOUT ROWID;
   CREATE INDEX notify_pending_due ON notify_pending (due_at_ms);`,
];


const INSERT_COLUMNS = 'conversation_id, seq, server_msg_id, from_user, from_device, client_msg_id, text, sent_at_ms, event, content';
const MESSAGE_COLUMNS = `${INSERT_COLUMNS}, recalled_by`;
const NO_LIMIT = Number.MAX_SAFE_INTEGER;

/** A user's row of its conversation list: the conversation and its membership. */
interface StateRow extends StateColumns {
  last_at_ms: number;
  rejoined: number;
  retained_from_seq: number;
}

/** The head of the table as retention reads it, in storage order (see expireBefore). */
interface HeadRow {
  id: number;
  conversation_id: string;
  seq: number;
  sent_at_ms: number;
}

// A member who left sees activity only up to its leaving.
const LIST_SELECT = `SELECT c.id, c.kind, c.last_seq, c.retained_from_seq, m.joined_seq, m.left_seq, m.read_seq,
    EXISTS (SELECT 1 FROM member_windows w WHERE w.conversation_id = m.conversation_id AND w.user_id = m.user_id) AS rejoined,
    CASE WHEN m.left_seq IS NULL THEN c.last_at_ms
         ELSE coalesce((SELECT x.sent_at_ms FROM messages x WHERE x.conversation_id = c.id AND x.seq = m.left_seq), c.last_at_ms)
    END AS last_at_ms
  FROM members m JOIN conversations c ON c.id = m.conversation_id`;

function stateOf(r: StateRow): ConversationState {
  const c = toState(r, r.last_at_ms, r.rejoined === 1);
  if (r.retained_from_seq > 1) c.retainedFromSeq = r.retained_from_seq;
  return c;
}

/** A row of a sync's scan (SYNC_SELECT). */
interface SyncRow extends StateColumns {
  id: string;
  retained_from_seq: number;
  change_no: number;
  rejoined: number;
  from_seq: number;
  named: number;
  content: number;
}

function syncConversationOf(r: SyncRow): SyncConversation {
  const { lastAtMs: _, ...state } = toState(r, 0, r.rejoined === 1);
  const c: SyncConversation = { ...state, from: r.from_seq, named: r.named === 1, changeNo: r.change_no };
  if (r.retained_from_seq > 1) c.retainedFromSeq = r.retained_from_seq;
  return c;
}

// A full sync's rows (store.ts, "Sync"): the user's memberships with the cursor the request gave (@given: its cursors
// as one JSON object; conversation ids hold no '"'), else, when @delivered is 1 (a client that keeps no cursors of its
// own), the device's delivered cursor (@device).
const SYNC_GIVEN = `json_extract(@given, '$."' || m.conversation_id || '"')`;
const SYNC_SELECT = `SELECT m.conversation_id AS id, c.kind, c.last_seq, c.retained_from_seq, m.joined_seq, m.left_seq, m.read_seq, m.change_no,
    EXISTS (SELECT 1 FROM member_windows w WHERE w.conversation_id = m.conversation_id AND w.user_id = m.user_id) AS rejoined,
    coalesce(${SYNC_GIVEN}, d.delivered_seq, 0) AS from_seq, ${SYNC_GIVEN} IS NOT NULL AS named,
    min(c.last_seq, coalesce(m.left_seq, c.last_seq))
      > max(coalesce(${SYNC_GIVEN}, d.delivered_seq, 0), m.joined_seq - 1, c.retained_from_seq - 1) AS content
  FROM members m JOIN conversations c ON c.id = m.conversation_id
  LEFT JOIN device_cursors d ON @delivered = 1 AND d.user_id = m.user_id AND d.device_id = @device AND d.conversation_id = m.conversation_id`;

interface MemberRow {
  role: string;
  muted: number;
  joined_seq: number;
  left_seq: number | null;
  read_seq: number;
}

const KNOWN_CONVERSATIONS_MAX = 200_000;
/** How long acked delivery cursors wait for a message transaction to ride in. */
const CURSOR_DELAY_MS = 100;

/**
 * Group commit for synchronous=FULL. Transactions commit with SQLite's
 * synchronous=NORMAL (the WAL is written, not flushed); then the commit waits
 * for an fdatasync of the WAL file run on libuv's thread pool. A flush makes
 * durable every commit that finished before it started; commits that arrive
 * while one runs share the next. The event loop keeps serving sockets while
 * the disk works, instead of blocking in SQLite's own fsync for each batch.
 */
class WalFlusher {
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  /** The flush that covers every commit so far (readers wait for it). */
  private latest: Promise<void> = Promise.resolve();
  /**
   * After a failed fdatasync the kernel may have dropped the dirty pages and a
   * retry would succeed without them, so the store fails for good (like
   * PostgreSQL): restart the process, SQLite recovers from what is on disk.
   */
  private failed: Error | undefined;

  constructor(readonly fd: number) {}

  /** Resolves once everything committed before the call is on disk. */
  flush(): Promise<void> {
    this.latest = this.next();
    return this.latest;
  }

  /** Resolves once every commit made so far is on disk (no flush of its own when none is pending). */
  durable(): Promise<void> {
    return this.latest.catch(() => undefined);
  }

  private next(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (!this.running) return this.start();
    // The flush in flight may have started before this commit: wait for the next one.
    this.queued ??= this.running.then(() => {
      this.queued = undefined;
      return this.start();
    }, () => {
      this.queued = undefined;
      return this.start();
    });
    return this.queued;
  }

  private start(): Promise<void> {
    const flushing = new Promise<void>((resolve, reject) => fdatasync(this.fd, (err) => {
      if (!err) return resolve();
      this.failed ??= new Error(`the SQLite WAL could not be flushed (${err.message}); the store refuses writes until restarted`);
      logger.error({ err }, this.failed.message);
      reject(this.failed);
    }));
    const running = flushing.finally(() => {
      if (this.running === running) this.running = undefined;
    });
    this.running = running;
    return running;
  }
}

/**
 * Checkpoints (copying the WAL back into the database file, with its fsyncs)
 * run on a worker thread with a connection of its own, every
 * CHECKPOINT_EVERY_MS, PASSIVE so they never block the writer. SQLite's own
 * auto-checkpoint would run them inside a commit on the event loop, stalling
 * every connection for the copy. Its threshold stays, far higher, as a backstop.
 */
const CHECKPOINT_EVERY_MS = 250;
const BACKSTOP_AUTOCHECKPOINT_PAGES = 20_000;
const CHECKPOINTER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.path);
db.pragma('busy_timeout = 5000');
const timer = setInterval(() => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch { /* busy or closing: next time */ }
}, workerData.everyMs);
parentPort.on('message', () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

interface Checkpointer {
  worker: Worker;
  exited: Promise<void>;
}

function startCheckpointer(path: string): Checkpointer {
  const worker = new Worker(CHECKPOINTER, {
    eval: true,
    workerData: { path, module: createRequire(import.meta.url).resolve('better-sqlite3'), everyMs: CHECKPOINT_EVERY_MS },
  });
  worker.unref();
  worker.on('error', (err) => logger.error({ err }, 'checkpointer failed; SQLite checkpoints in commits instead'));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return { worker, exited };
}

export class SqliteStore implements Store {
  /** One consumer applies a group's changes and sends in arrival order: the pipeline's check before the append holds. */
  readonly checksSenders = false;
  private readonly db: Database.Database;
  private readonly stmts;
  /** Files, search, push notifications (sqlite-features.ts). */
  private readonly features: SqliteFeatures;
  private readonly appendTx: (drafts: readonly MessageDraft[]) => AppendResult[];

  /** Set when synchronous is 'full' on a file: see WalFlusher. */
  private readonly flusher: WalFlusher | undefined;
  /**
   * Conversations known to have their row (and members), so a message to one
   * skips the insert-if-missing. Bounded: cleared when full, then refilled.
   */
  private readonly knownConversations = new Set<string>();
  /** The change number of the write transaction running (store.ts, "Sync"). */
  private change = 0;
  /** The change slack (store.ts, "Sync"; SqliteStoreOptions.changeSlack). */
  private readonly slack: number;
  /** The conversations of the append running whose member rows are to be written for the change index (changed()). */
  private readonly due = new Set<string>();
  private readonly checkpointer: Checkpointer | undefined;
  private closing: Promise<void> | undefined;
  /** Delivery cursors acked but not written yet, by user, device and conversation (see advanceDelivered). */
  private readonly pendingCursors = new Map<string, { userId: string; deviceId: string; conversationId: string; seq: number }>();
  /** 1:1 delivered marks moved by those cursors, written with them, by conversation and user. */
  private readonly pendingMarks = new Map<string, DeliveredMark>();
  private cursorTimer: NodeJS.Timeout | undefined;
  private readonly cursorTx: () => void;
  private readonly expireTx: (cutoffMs: number, limit: number) => number;
  private readonly orphanTx: (conversationId: string, fromSeq: number, nowMs: number) => number;
  private readonly mergeMarksTx: (changes: MarkChanges) => { moved: MarkChanges['reads']; missing: Pick<MarkChanges, 'reads' | 'cursors'> };
  private readonly replicateTx: (entries: readonly ReplicaEntry[]) => boolean[];
  private readonly reactTx: (
    conversationId: string, seq: number, userId: string, emoji: string, add: boolean, atMs: number, limits: ReactionLimits,
  ) => 'changed' | 'unchanged' | 'too-many';
  private readonly riskAuditTx: (entries: readonly RiskAuditDraft[]) => void;
  private readonly firstSeenTx: (userIds: readonly string[], nowMs: number) => { wrote: boolean; out: Map<string, number> };

  constructor(options: SqliteStoreOptions) {
    this.slack = Math.max(0, Math.floor(options.changeSlack ?? SQLITE_CHANGE_SLACK));
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    this.db = new Database(options.path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
    if (options.path !== ':memory:') {
      this.db.pragma(`wal_autocheckpoint = ${BACKSTOP_AUTOCHECKPOINT_PAGES}`);
      this.checkpointer = startCheckpointer(options.path);
      const wal = (options.synchronous ?? 'full') === 'full' ? openWal(`${options.path}-wal`) : undefined;
      if (wal !== undefined) this.flusher = new WalFlusher(wal);
    }
    // SQLite itself syncs only when nobody else does: 'full' without a WAL file to flush.
    if (this.flusher || options.synchronous === 'normal') this.db.pragma('synchronous = NORMAL');
    const db = this.db;
    this.features = new SqliteFeatures(db);
    this.stmts = {
      byClientId: db.prepare<[string, string], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE from_user = ? AND client_msg_id = ? AND client_msg_id <> ''`,
      ),
      dcHomes: db.prepare<[], HomeRow>(`SELECT dc, served_by, epoch, state, changed_at_ms FROM dc_homes`),
      putDcHome: db.prepare<[string, string, number, string, number]>(
        `INSERT INTO dc_homes (dc, served_by, epoch, state, changed_at_ms) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (dc) DO UPDATE SET served_by = excluded.served_by, epoch = excluded.epoch, state = excluded.state, changed_at_ms = excluded.changed_at_ms
         WHERE epoch < excluded.epoch`,
      ),
      dcHome: db.prepare<[string], HomeRow>(`SELECT dc, served_by, epoch, state, changed_at_ms FROM dc_homes WHERE dc = ?`),
      changedSince: db.prepare<[number, number], { id: string; last_seq: number; home_dc: string; last_at_ms: number }>(
        `SELECT id, last_seq, home_dc, last_at_ms FROM conversations WHERE last_at_ms >= ? ORDER BY last_at_ms, id LIMIT ?`,
      ),
      orphanKeyCopy: db.prepare<[number, string, string, string, number]>(
        `INSERT INTO orphaned_messages (orphaned_at_ms, ${MESSAGE_COLUMNS}) SELECT ?, ${MESSAGE_COLUMNS} FROM messages
         WHERE from_user = ? AND client_msg_id = ? AND client_msg_id <> '' AND NOT (conversation_id = ? AND seq = ?)`,
      ),
      orphanKeyDelete: db.prepare<[string, string, string, number]>(
        `DELETE FROM messages WHERE from_user = ? AND client_msg_id = ? AND client_msg_id <> '' AND NOT (conversation_id = ? AND seq = ?)`,
      ),
      orphanCopy: db.prepare<[number, string, number]>(
        `INSERT INTO orphaned_messages (orphaned_at_ms, ${MESSAGE_COLUMNS}) SELECT ?, ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq >= ?`,
      ),
      orphanDelete: db.prepare<[string, number]>(`DELETE FROM messages WHERE conversation_id = ? AND seq >= ?`),
      rewindHead: db.prepare<[number, string]>(`UPDATE conversations SET last_seq = min(last_seq, ?) WHERE id = ?`),
      conversationHead: db.prepare<[string], { last_seq: number; home_dc: string }>(`SELECT last_seq, home_dc FROM conversations WHERE id = ?`),
      replicaMessage: db.prepare(
        `INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (conversation_id, seq) DO NOTHING`,
      ),
      replicaConversation: db.prepare<[string, string, string]>(
        `INSERT INTO conversations (id, kind, home_dc) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING`,
      ),
      replicaHead: db.prepare<[number, number, string]>(
        `UPDATE conversations SET last_seq = max(last_seq, ?), last_at_ms = max(last_at_ms, ?) WHERE id = ?`,
      ),
      createConversation: db.prepare<[string, string]>(
        `INSERT INTO conversations (id, kind) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
      ),
      addMember: db.prepare<[string, string, number]>(
        `INSERT INTO members (user_id, conversation_id, joined_at_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
      ),
      // A rejoin first keeps the window that ended (see pastWindows).
      keepWindow: db.prepare<[string, string]>(
        `INSERT OR IGNORE INTO member_windows (conversation_id, user_id, joined_seq, left_seq)
         SELECT conversation_id, user_id, joined_seq, left_seq FROM members
         WHERE conversation_id = ? AND user_id = ? AND left_seq IS NOT NULL AND left_seq >= joined_seq`,
      ),
      pastWindows: db.prepare<[string, string], { joined_seq: number; left_seq: number }>(
        `SELECT * FROM (SELECT joined_seq, left_seq FROM member_windows WHERE conversation_id = ? AND user_id = ?
           ORDER BY joined_seq DESC LIMIT ${PAST_WINDOWS_MAX}) ORDER BY joined_seq`,
      ),
      // A member who joins has something to read: its row changes (CHANGE_ALWAYS in a group too large for that).
      joinMember: db.prepare<[string, number, string, number, number, number, string]>(
        `INSERT INTO members (user_id, conversation_id, joined_at_ms, role, joined_seq, left_seq, read_seq, muted, change_no)
         SELECT ?, c.id, ?, ?, ?, NULL, ?, 0, CASE WHEN c.fanout = 1 THEN ? ELSE ${CHANGE_ALWAYS} END FROM conversations c WHERE c.id = ?
         ON CONFLICT (user_id, conversation_id) DO UPDATE SET
           role = excluded.role, joined_seq = excluded.joined_seq, left_seq = NULL, muted = 0,
           joined_at_ms = excluded.joined_at_ms, read_seq = max(read_seq, excluded.read_seq),
           wrote = CASE WHEN left_seq IS NULL THEN wrote ELSE 0 END, change_no = excluded.change_no`,
      ),
      // A member who leaves has its leaving to read (its row changes, whatever the group's size).
      leaveMember: db.prepare<[number, number, string, string]>(
        `UPDATE members SET left_seq = ?, change_no = ? WHERE conversation_id = ? AND user_id = ? AND left_seq IS NULL`,
      ),
      leaveAll: db.prepare<[number, number, string]>(
        `UPDATE members SET left_seq = ?, change_no = ? WHERE conversation_id = ? AND left_seq IS NULL`,
      ),
      // The change index (store.ts, "Sync"): one change number per write transaction.
      nextChange: db.prepare<[], { n: number }>(`UPDATE change_clock SET n = n + 1 RETURNING n`),
      // The members who may see a seq from this one on have something to read, unless their row's change number is at
      // or past the last parameter (the change less the slack: store.ts, "Sync"); a group too large for that is read
      // at every sync instead.
      bumpChanges: db.prepare<[number, string, number, number]>(
        `UPDATE members SET change_no = ? WHERE conversation_id = ? AND (left_seq IS NULL OR left_seq >= ?) AND change_no < ?
         AND (SELECT fanout FROM conversations c WHERE c.id = members.conversation_id) = 1`,
      ),
      markBig: db.prepare<[string, string]>(
        `UPDATE conversations SET fanout = 0 WHERE id = ? AND fanout = 1
         AND (SELECT count(*) FROM members WHERE conversation_id = ? AND left_seq IS NULL) > ${CHANGE_FANOUT_MAX}`,
      ),
      bigMembers: db.prepare<[string]>(`UPDATE members SET change_no = ${CHANGE_ALWAYS} WHERE conversation_id = ? AND left_seq IS NULL`),
      // A conversation whose member rows' change numbers are not recent (below the last parameter: the change less the
      // slack; or never written since migration 12) takes this change's: its member rows are to be written (changed()).
      dueMembers: db.prepare<[number, string, number]>(`UPDATE conversations SET members_change_no = ? WHERE id = ? AND (members_change_no < ? OR members_change_no = 0)`),
      // The next change number: every change so far is committed (one writer).
      nextChangeNo: db.prepare<[], { n: number }>(`SELECT n + 1 AS n FROM change_clock WHERE id = 1`),
      syncScan: db.prepare<[{ user: string; device: string; given: string; delivered: number; no: number; id: string; limit: number }], SyncRow>(
        `${SYNC_SELECT}
         WHERE m.user_id = @user AND (m.change_no, m.conversation_id) >= (@no, @id) AND (${SYNC_GIVEN} IS NOT NULL OR content)
         ORDER BY m.change_no, m.conversation_id LIMIT @limit`,
      ),
      syncStates: db.prepare<[{ user: string; device: string; given: string; delivered: number; ids: string }], SyncRow>(
        `${SYNC_SELECT}
         WHERE m.user_id = @user AND m.conversation_id IN (SELECT value FROM json_each(@ids)) ORDER BY c.last_at_ms DESC, c.id`,
      ),
      setRole: db.prepare<[string, string, string]>(`UPDATE members SET role = ? WHERE conversation_id = ? AND user_id = ?`),
      setOwner: db.prepare<[string, string]>(`UPDATE groups SET owner = ? WHERE id = ?`),
      muteMember: db.prepare<[number, string, string]>(`UPDATE members SET muted = ? WHERE conversation_id = ? AND user_id = ?`),
      createGroup: db.prepare<[string, string, string, number]>(
        `INSERT INTO groups (id, name, owner, created_at_ms) VALUES (?, ?, ?, ?)`,
      ),
      muteGroup: db.prepare<[number, string]>(`UPDATE groups SET muted_all = ? WHERE id = ?`),
      dismissGroup: db.prepare<[string]>(`UPDATE groups SET dismissed = 1 WHERE id = ?`),
      recall: db.prepare<[string, string, number]>(
        `UPDATE messages SET text = '', content = NULL, recalled_by = ? WHERE conversation_id = ? AND seq = ?`,
      ),
      // A tombstone: text and content gone, recalled_by names who deleted it (contentJson's deleted mark).
      deleteMessage: db.prepare<[string, string, number]>(
        `UPDATE messages SET text = '', content = '{"deleted":true}', recalled_by = ? WHERE conversation_id = ? AND seq = ?`,
      ),
      // A recalled or deleted message is not edited back.
      editMessage: db.prepare<[string, string | null, string, number]>(
        `UPDATE messages SET text = ?, content = ? WHERE conversation_id = ? AND seq = ? AND recalled_by IS NULL AND event IS NULL`,
      ),
      insertMention: db.prepare<[string, string, number]>(
        `INSERT INTO mentions (conversation_id, user_id, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
      ),
      clearMentions: db.prepare<[string, number]>(`DELETE FROM mentions WHERE conversation_id = ? AND seq = ?`),
      clearMentionsFrom: db.prepare<[string, number]>(`DELETE FROM mentions WHERE conversation_id = ? AND seq >= ?`),
      clearMentionsBelow: db.prepare<[string, number]>(`DELETE FROM mentions WHERE conversation_id = ? AND seq < ?`),
      mentioned: db.prepare<[string, string, number, number], { one: number }>(
        `SELECT 1 AS one FROM mentions WHERE conversation_id = ? AND user_id IN (?, '*') AND seq > ? AND seq <= ? LIMIT 1`,
      ),
      blocked: db.prepare<[string, number], { blocked_id: string }>(
        `SELECT blocked_id FROM blocks WHERE user_id = ? ORDER BY blocked_id LIMIT ?`,
      ),
      blockCount: db.prepare<[string], { n: number }>(`SELECT count(*) AS n FROM blocks WHERE user_id = ?`),
      block: db.prepare<[string, string, number]>(
        `INSERT INTO blocks (user_id, blocked_id, at_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
      ),
      unblock: db.prepare<[string, string]>(`DELETE FROM blocks WHERE user_id = ? AND blocked_id = ?`),
      blocks: db.prepare<[string, string], { one: number }>(`SELECT 1 AS one FROM blocks WHERE user_id = ? AND blocked_id = ?`),
      hide: db.prepare<[string, string, number]>(`INSERT INTO hidden (user_id, conversation_id, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`),
      hiddenSeqs: db.prepare<[string, string, string], { seq: number }>(
        `SELECT seq FROM hidden WHERE user_id = ? AND conversation_id = ? AND seq IN (SELECT value FROM json_each(?))`,
      ),
      profile: db.prepare<[string], { name: string; avatar_url: string; updated_at_ms: number }>(
        `SELECT name, avatar_url, updated_at_ms FROM profiles WHERE user_id = ?`,
      ),
      putProfile: db.prepare<[string, string, string, number]>(
        `INSERT INTO profiles (user_id, name, avatar_url, updated_at_ms) VALUES (?, ?, ?, ?)
         ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, avatar_url = excluded.avatar_url, updated_at_ms = excluded.updated_at_ms`,
      ),
      hasReaction: db.prepare<[string, number, string, string], { one: number }>(
        `SELECT 1 AS one FROM reactions WHERE conversation_id = ? AND seq = ? AND emoji = ? AND user_id = ?`,
      ),
      emojiCount: db.prepare<[string, string, number], { n: number; known: number }>(
        `SELECT count(*) AS n, coalesce(sum(emoji = ?), 0) AS known FROM reaction_counts WHERE conversation_id = ? AND seq = ?`,
      ),
      userReactionCount: db.prepare<[string, number, string], { n: number }>(
        `SELECT count(*) AS n FROM reactions WHERE conversation_id = ? AND seq = ? AND user_id = ?`,
      ),
      addReaction: db.prepare<[string, number, string, string, number]>(
        `INSERT INTO reactions (conversation_id, seq, emoji, user_id, at_ms) VALUES (?, ?, ?, ?, ?)`,
      ),
      countUp: db.prepare<[string, number, string, number]>(
        `INSERT INTO reaction_counts (conversation_id, seq, emoji, n, first_at_ms) VALUES (?, ?, ?, 1, ?)
         ON CONFLICT (conversation_id, seq, emoji) DO UPDATE SET n = n + 1`,
      ),
      removeReaction: db.prepare<[string, number, string, string]>(
        `DELETE FROM reactions WHERE conversation_id = ? AND seq = ? AND emoji = ? AND user_id = ?`,
      ),
      countDown: db.prepare<[string, number, string]>(`UPDATE reaction_counts SET n = n - 1 WHERE conversation_id = ? AND seq = ? AND emoji = ?`),
      dropEmptyCount: db.prepare<[string, number, string]>(`DELETE FROM reaction_counts WHERE conversation_id = ? AND seq = ? AND emoji = ? AND n <= 0`),
      reactionCounts: db.prepare<[string, string], { seq: number; emoji: string; n: number }>(
        `SELECT seq, emoji, n FROM reaction_counts WHERE conversation_id = ? AND seq IN (SELECT value FROM json_each(?)) ORDER BY seq, first_at_ms, emoji`,
      ),
      reactionUsers: db.prepare<[string, number, string, number], { user_id: string }>(
        `SELECT user_id FROM reactions WHERE conversation_id = ? AND seq = ? AND emoji = ? ORDER BY at_ms, user_id LIMIT ?`,
      ),
      // Reactions of messages gone (recalled, deleted, expired, orphaned) go with them.
      clearReactions: db.prepare<[string, number, number]>(`DELETE FROM reactions WHERE conversation_id = ? AND seq >= ? AND seq < ?`),
      clearReactionCounts: db.prepare<[string, number, number]>(`DELETE FROM reaction_counts WHERE conversation_id = ? AND seq >= ? AND seq < ?`),
      clearHidden: db.prepare<[string, number, number]>(`DELETE FROM hidden WHERE conversation_id = ? AND seq >= ? AND seq < ?`),
      // The next seq, and whether the conversation's member rows are to be written for the change index (due: its
      // members_change_no is below @threshold, the change less the slack, or 0; it takes @change: see changed()).
      nextSeq: db.prepare<[{ at: number; id: string; change: number; threshold: number }], { last_seq: number; due: number }>(
        `UPDATE conversations SET last_seq = last_seq + 1, last_at_ms = max(last_at_ms, @at),
           members_change_no = CASE WHEN members_change_no < @threshold OR members_change_no = 0 THEN @change ELSE members_change_no END
         WHERE id = @id RETURNING last_seq, members_change_no = @change AS due`,
      ),
      insertMessage: db.prepare(
        `INSERT INTO messages (${INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      readOwn: db.prepare<[number, string, string]>(
        `UPDATE members SET read_seq = max(read_seq, ?), wrote = 1 WHERE conversation_id = ? AND user_id = ?`,
      ),
      markRead: db.prepare<[{ seq: number; now: number; conversation: string; user: string }]>(
        `UPDATE members SET read_seq = max(read_seq, @seq), read_at_ms = CASE WHEN @seq > read_seq THEN @now ELSE read_at_ms END
         WHERE conversation_id = @conversation AND user_id = @user`,
      ),
      membersAt: db.prepare<[{ conversation: string; seq: number }], { user_id: string }>(
        `SELECT user_id FROM members WHERE conversation_id = @conversation AND joined_seq <= @seq AND (left_seq IS NULL OR left_seq > @seq)
         ORDER BY user_id`,
      ),
      isLarge: db.prepare<[string], { one: number }>(`SELECT 1 AS one FROM conversations WHERE id = ? AND fanout = 0`),
      lastSeq: db.prepare<[string], { last_seq: number }>(`SELECT last_seq FROM conversations WHERE id = ?`),
      memberWindows: db.prepare<[string, number], { user_id: string; joined_seq: number; left_seq: number | null }>(
        `SELECT user_id, joined_seq, left_seq FROM members WHERE conversation_id = ? AND (left_seq IS NULL OR left_seq > ?)`,
      ),
      hasWrittenTo: db.prepare<[string, string], { one: number }>(
        `SELECT 1 AS one FROM members a JOIN members b ON b.user_id = ? AND b.conversation_id = a.conversation_id AND b.left_seq IS NULL
         WHERE a.user_id = ? AND a.wrote = 1 AND a.left_seq IS NULL LIMIT 1`,
      ),
      groupCount: db.prepare<[string], { n: number }>(
        `SELECT count(*) AS n FROM members WHERE user_id = ? AND conversation_id >= 'g:' AND conversation_id < 'g;' AND left_seq IS NULL`,
      ),
      after: db.prepare<[string, number, number, number], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
      ),
      before: db.prepare<[string, number, number, number], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq < ? AND seq >= ? ORDER BY seq DESC LIMIT ?`,
      ),
      one: db.prepare<[string, number], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq = ?`,
      ),
      unread: db.prepare<[string, number, number, string, number], { n: number }>(
        `SELECT count(*) AS n FROM (SELECT 1 FROM messages WHERE conversation_id = ? AND seq > ? AND seq <= ?
         AND from_user <> ? AND event IS NULL LIMIT ?)`,
      ),
      members: db.prepare<[string], { user_id: string }>(
        `SELECT user_id FROM members WHERE conversation_id = ? AND left_seq IS NULL ORDER BY user_id`,
      ),
      membership: db.prepare<[string, string], MemberRow>(
        `SELECT role, muted, joined_seq, left_seq, read_seq FROM members WHERE conversation_id = ? AND user_id = ?`,
      ),
      groupRow: db.prepare<[string], { id: string; name: string; owner: string; muted_all: number; dismissed: number; created_at_ms: number }>(
        `SELECT id, name, owner, muted_all, dismissed, created_at_ms FROM groups WHERE id = ?`,
      ),
      groupMembers: db.prepare<[string], { user_id: string; role: string; muted: number; read_seq: number }>(
        `SELECT user_id, role, muted, read_seq FROM members WHERE conversation_id = ? AND left_seq IS NULL
         ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, user_id`,
      ),
      readCursors: db.prepare<[string], { user_id: string; read_seq: number }>(
        `SELECT user_id, read_seq FROM members WHERE conversation_id = ? AND left_seq IS NULL`,
      ),
      listForUser: db.prepare<[string], StateRow>(`${LIST_SELECT} WHERE m.user_id = ? ORDER BY last_at_ms DESC, c.id`),
      // The same order, resumed after (at_ms, id): rows sort by at_ms DESC, then id.
      listPage: db.prepare<[string, number, number, string, number], StateRow>(
        `SELECT * FROM (${LIST_SELECT} WHERE m.user_id = ?)
         WHERE last_at_ms < ? OR (last_at_ms = ? AND id > ?) ORDER BY last_at_ms DESC, id LIMIT ?`,
      ),
      peerRead: db.prepare<[string, string], { read_seq: number; delivered_seq: number }>(
        `SELECT read_seq, delivered_seq FROM members WHERE conversation_id = ? AND user_id = ?`,
      ),
      // A receiver's ack in a 1:1, in one read: where its delivered mark stands (the stored one, or the one waiting to be
      // written if higher: the first parameter), the conversation's last seq, and whether the other member wrote in
      // between that mark and the acked seq (the second, clamped to the last): then the mark's move is news to that member.
      deliveredMark: db.prepare<[number, number, string, string], { from_seq: number; last_seq: number; peer_wrote: number }>(
        `SELECT max(m.delivered_seq, p.pending) AS from_seq, c.last_seq,
           EXISTS (SELECT 1 FROM messages x WHERE x.conversation_id = m.conversation_id AND x.seq > max(m.delivered_seq, p.pending)
                     AND x.seq <= min(p.acked, c.last_seq) AND x.from_user <> m.user_id) AS peer_wrote
         FROM members m JOIN conversations c ON c.id = m.conversation_id, (SELECT ? AS pending, ? AS acked) p
         WHERE m.conversation_id = ? AND m.user_id = ?`,
      ),
      advanceMark: db.prepare<[number, string, string]>(
        `UPDATE members SET delivered_seq = max(delivered_seq, ?) WHERE conversation_id = ? AND user_id = ?`,
      ),
      lastVisible: db.prepare<[number, string, number, number], MessageRow & { whole: number }>(
        `SELECT conversation_id, seq, server_msg_id, from_user, from_device, client_msg_id, substr(text, 1, ?) AS text, sent_at_ms, event, recalled_by,
           content, length(text) AS whole
         FROM messages WHERE conversation_id = ? AND seq <= ? AND seq >= ? ORDER BY seq DESC LIMIT 1`,
      ),
      // A cursor never passes the conversation's last seq (a bogus ack must not skip future messages).
      advance: db.prepare<[string, string, string, number, number, string]>(
        `INSERT INTO device_cursors (user_id, device_id, conversation_id, delivered_seq, at_ms)
         SELECT ?, ?, ?, min(?, last_seq), ? FROM conversations WHERE id = ?
         ON CONFLICT (user_id, device_id, conversation_id)
         DO UPDATE SET delivered_seq = max(delivered_seq, excluded.delivered_seq),
           at_ms = CASE WHEN excluded.delivered_seq > delivered_seq THEN excluded.at_ms ELSE at_ms END`,
      ),
      readsSince: db.prepare<[number, number, number], { conversation_id: string; user_id: string; read_seq: number; read_at_ms: number }>(
        `SELECT conversation_id, user_id, read_seq, read_at_ms FROM members WHERE read_at_ms >= ? AND read_at_ms > 0 AND read_at_ms <= ? ORDER BY read_at_ms LIMIT ?`,
      ),
      cursorsSince: db.prepare<[number, number, number], { user_id: string; device_id: string; conversation_id: string; delivered_seq: number; at_ms: number }>(
        `SELECT user_id, device_id, conversation_id, delivered_seq, at_ms FROM device_cursors WHERE at_ms >= ? AND at_ms > 0 AND at_ms <= ? ORDER BY at_ms LIMIT ?`,
      ),
      revocationsSince: db.prepare<[number, number, number], { user_id: string; device_id: string; before_ms: number; at_ms: number }>(
        `SELECT user_id, device_id, before_ms, at_ms FROM revocations WHERE at_ms >= ? AND at_ms > 0 AND at_ms <= ? ORDER BY at_ms LIMIT ?`,
      ),
      // Copies from another datacenter: forward only, not stamped (at_ms stays as it was here, 0 for a new row).
      mergeRead: db.prepare<[number, string, string, number], { read_seq: number }>(
        `UPDATE members SET read_seq = ? WHERE conversation_id = ? AND user_id = ? AND read_seq < ? RETURNING read_seq`,
      ),
      mergeCursor: db.prepare<[string, string, string, number, string]>(
        `INSERT INTO device_cursors (user_id, device_id, conversation_id, delivered_seq)
         SELECT ?, ?, ?, ? FROM conversations WHERE id = ?
         ON CONFLICT (user_id, device_id, conversation_id) DO UPDATE SET delivered_seq = max(delivered_seq, excluded.delivered_seq)`,
      ),
      mergeRevocation: db.prepare<[string, string, number]>(
        `INSERT INTO revocations (user_id, device_id, before_ms, at_ms) VALUES (?, ?, ?, 0)
         ON CONFLICT (user_id, device_id) DO UPDATE SET before_ms = max(before_ms, excluded.before_ms)`,
      ),
      putRevocation: db.prepare<[string, string, number, number]>(
        `INSERT INTO revocations (user_id, device_id, before_ms, at_ms) VALUES (?, ?, ?, ?)
         ON CONFLICT (user_id, device_id) DO UPDATE SET before_ms = max(before_ms, excluded.before_ms), at_ms = excluded.at_ms`,
      ),
      dcState: db.prepare<[string], { value: string }>(`SELECT value FROM dc_state WHERE key = ?`),
      putDcState: db.prepare<[string, string]>(
        `INSERT INTO dc_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      ),
      delivered: db.prepare<[string, string], { conversation_id: string; delivered_seq: number }>(
        `SELECT conversation_id, delivered_seq FROM device_cursors WHERE user_id = ? AND device_id = ?`,
      ),
      // Retention: the oldest stored rows (a new row's id is above every row's held: storage order).
      head: db.prepare<[number], HeadRow>(`SELECT id, conversation_id, seq, sent_at_ms FROM messages ORDER BY id LIMIT ?`),
      expireThrough: db.prepare<[number]>(`DELETE FROM messages WHERE id <= ?`),
      raiseFloor: db.prepare<[number, string]>(
        `UPDATE conversations SET retained_from_seq = max(retained_from_seq, ?) WHERE id = ?`,
      ),
      // Risk control.
      riskRules: db.prepare<[], { version: number; document: string; updated_at_ms: number }>(
        `SELECT version, document, updated_at_ms FROM risk_rules WHERE id = 1`,
      ),
      riskRulesVersion: db.prepare<[], { version: number }>(`SELECT version FROM risk_rules WHERE id = 1`),
      putRiskRules: db.prepare<[string, number], { version: number }>(
        `INSERT INTO risk_rules (id, version, document, updated_at_ms) VALUES (1, 1, ?, ?)
         ON CONFLICT (id) DO UPDATE SET version = version + 1, document = excluded.document, updated_at_ms = excluded.updated_at_ms
         RETURNING version`,
      ),
      insertRiskAudit: db.prepare<[number, string, string, string, string]>(
        `INSERT INTO risk_audit (at_ms, user_id, rule, action, detail) VALUES (?, ?, ?, ?, ?)`,
      ),
      riskAudit: db.prepare<[number, number], RiskAuditRow>(
        `SELECT id, at_ms, user_id, rule, action, detail FROM risk_audit WHERE id < ? ORDER BY id DESC LIMIT ?`,
      ),
      riskAuditByUser: db.prepare<[string, number, number], RiskAuditRow>(
        `SELECT id, at_ms, user_id, rule, action, detail FROM risk_audit WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?`,
      ),
      insertSetting: db.prepare<[string, string]>(`INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`),
      setting: db.prepare<[string], { value: string }>(`SELECT value FROM settings WHERE key = ?`),
      insertFirstSeen: db.prepare<[string, number]>(
        `INSERT INTO risk_first_seen (user_id, first_seen_ms) VALUES (?, ?) ON CONFLICT (user_id) DO NOTHING`,
      ),
      firstSeen: db.prepare<[string], { first_seen_ms: number }>(`SELECT first_seen_ms FROM risk_first_seen WHERE user_id = ?`),
    };
    const writeCursors = () => {
      const now = Date.now();
      for (const u of this.pendingCursors.values()) this.stmts.advance.run(u.userId, u.deviceId, u.conversationId, u.seq, now, u.conversationId);
      for (const m of this.pendingMarks.values()) this.stmts.advanceMark.run(m.seq, m.conversationId, m.userId);
    };
    // Cursors waiting go first, so they are clamped to the conversations as they were when acked.
    const appendTx = db.transaction((drafts: readonly MessageDraft[], created: string[]) => {
      // Several datacenters: nothing is written under a record of who serves a home older than the one stored (MessageDraft.homeEpoch).
      for (const d of drafts) {
        if (!d.homeEpoch) continue;
        const stored = this.stmts.dcHome.get(d.homeEpoch.dc);
        if (stored && stored.epoch > d.homeEpoch.epoch) {
          throw new StoreUnavailableError(`the homes of datacenter ${d.homeEpoch.dc} moved (epoch ${stored.epoch}); the batch is handed again to where they are served now`);
        }
      }
      writeCursors();
      this.change = this.stmts.nextChange.get()!.n;
      this.due.clear();
      const results = drafts.map((d) => this.appendOne(d, created));
      this.changed(results.filter((r) => !r.duplicate).map((r) => r.message), this.due);
      return results;
    });
    // What the transaction did is remembered only once it committed (a rolled-back one leaves no trace).
    this.appendTx = (drafts) => {
      const created: string[] = [];
      const results = appendTx(drafts, created);
      this.cursorsWritten();
      if (this.knownConversations.size + created.length > KNOWN_CONVERSATIONS_MAX) this.knownConversations.clear();
      for (const id of created) this.knownConversations.add(id);
      return results;
    };
    // The head's prefix older than the cutoff goes, rows and conversation floors in one transaction.
    this.expireTx = db.transaction((cutoffMs: number, limit: number): number => {
      const head = this.stmts.head.all(limit);
      let n = 0;
      while (n < head.length && head[n]!.sent_at_ms < cutoffMs) n++;
      if (n === 0) return 0;
      const floors = new Map<string, number>();
      const firsts = new Map<string, number>();
      for (const r of head.slice(0, n)) {
        floors.set(r.conversation_id, Math.max(floors.get(r.conversation_id) ?? 0, r.seq + 1));
        firsts.set(r.conversation_id, Math.min(firsts.get(r.conversation_id) ?? r.seq, r.seq));
      }
      this.stmts.expireThrough.run(head[n - 1]!.id);
      for (const [conversationId, floor] of floors) {
        this.stmts.raiseFloor.run(floor, conversationId);
        this.clearSeqs(conversationId, 0, floor);
      }
      // A floor that moves changes where a device there stands (a full sync answers its cursor: store.ts, "Sync").
      this.change = this.stmts.nextChange.get()!.n;
      for (const [conversationId, first] of firsts) this.stmts.bumpChanges.run(this.change, conversationId, first, this.change - this.slack);
      return n;
    });
    this.reactTx = db.transaction((conversationId: string, seq: number, userId: string, emoji: string, add: boolean, atMs: number, limits: ReactionLimits) => {
      const s = this.stmts;
      const there = s.hasReaction.get(conversationId, seq, emoji, userId) !== undefined;
      if (there === add) return 'unchanged';
      if (!add) {
        s.removeReaction.run(conversationId, seq, emoji, userId);
        s.countDown.run(conversationId, seq, emoji);
        s.dropEmptyCount.run(conversationId, seq, emoji);
        return 'changed';
      }
      const emojis = s.emojiCount.get(emoji, conversationId, seq)!;
      if (emojis.known === 0 && emojis.n >= limits.emojisPerMessage) return 'too-many';
      if (s.userReactionCount.get(conversationId, seq, userId)!.n >= limits.perUser) return 'too-many';
      s.addReaction.run(conversationId, seq, emoji, userId, atMs);
      s.countUp.run(conversationId, seq, emoji, atMs);
      return 'changed';
    });
    this.orphanTx = db.transaction((conversationId: string, fromSeq: number, nowMs: number) => {
      this.stmts.orphanCopy.run(nowMs, conversationId, fromSeq);
      const moved = this.stmts.orphanDelete.run(conversationId, fromSeq).changes;
      this.clearSeqs(conversationId, fromSeq, Number.MAX_SAFE_INTEGER);
      this.stmts.rewindHead.run(fromSeq - 1, conversationId);
      this.change = this.stmts.nextChange.get()!.n;
      this.stmts.bumpChanges.run(this.change, conversationId, fromSeq, this.change - this.slack);
      return moved;
    });
    this.replicateTx = db.transaction((entries: readonly ReplicaEntry[]) => {
      this.change = this.stmts.nextChange.get()!.n;
      const stored = entries.map((e) => this.replicateOne(e));
      this.changed(entries.filter((_, i) => stored[i]).map((e) => e.message));
      return stored;
    });
    this.mergeMarksTx = db.transaction(({ reads, cursors, revocations }: MarkChanges) => {
      const moved: MarkChanges['reads'] = [];
      const missing: Pick<MarkChanges, 'reads' | 'cursors'> = { reads: [], cursors: [] };
      for (const r of reads) {
        if (!this.stmts.membership.get(r.conversationId, r.userId)) {
          missing.reads.push(r);
          continue;
        }
        const row = this.stmts.mergeRead.get(r.seq, r.conversationId, r.userId, r.seq);
        if (row) moved.push({ conversationId: r.conversationId, userId: r.userId, seq: row.read_seq, atMs: 0 });
      }
      for (const c of cursors) {
        if (this.stmts.mergeCursor.run(c.userId, c.deviceId, c.conversationId, c.seq, c.conversationId).changes === 0
          && !this.stmts.conversationHead.get(c.conversationId)) {
          missing.cursors.push(c);
          continue;
        }
        if (directMembers(c.conversationId)) this.stmts.advanceMark.run(c.seq, c.conversationId, c.userId);
      }
      for (const r of revocations) this.stmts.mergeRevocation.run(r.userId, r.deviceId, r.beforeMs);
      return { moved, missing };
    });
    this.riskAuditTx = db.transaction((entries: readonly RiskAuditDraft[]) => {
      for (const e of entries) this.stmts.insertRiskAudit.run(e.atMs, e.userId, e.rule, e.action, e.detail);
    });
    // Returns whether a user was recorded (something to flush), and each one's first-seen time.
    this.firstSeenTx = db.transaction((userIds: readonly string[], nowMs: number) => {
      let wrote = false;
      const out = new Map<string, number>();
      for (const u of userIds) {
        if (this.stmts.insertFirstSeen.run(u, nowMs).changes > 0) wrote = true;
        out.set(u, this.stmts.firstSeen.get(u)!.first_seen_ms);
      }
      return { wrote, out };
    });
    const cursorTx = db.transaction(writeCursors);
    this.cursorTx = () => {
      cursorTx();
      this.cursorsWritten();
    };
    // Callers see typed errors, not SQLite's codes (a constructor may return the object to use).
    return withTypedErrors(this, classifySqliteError);
  }

  /**
   * The change index (store.ts, "Sync"), in the transaction that stored
   * `messages`: the members who may see one of them have something to read.
   * Only where the conversation's members_change_no is not recent: then
   * every one of them takes this change (and so does the conversation);
   * elsewhere each has a change number at or above the conversation's,
   * recent enough (the change slack; a join's is later still: one writer).
   */
  private changed(messages: readonly ChatMessage[], due?: ReadonlySet<string>): void {
    const first = new Map<string, number>();
    for (const m of messages) first.set(m.conversationId, Math.min(first.get(m.conversationId) ?? m.seq, m.seq));
    for (const [conversationId, seq] of first) {
      // An append learned it with each seq (nextSeq); a copy from another datacenter asks.
      if (due ? !due.has(conversationId) : this.stmts.dueMembers.run(this.change, conversationId, this.change - this.slack).changes === 0) continue;
      this.stmts.bumpChanges.run(this.change, conversationId, seq, CHANGE_ALWAYS);
    }
  }

  /** A group past CHANGE_FANOUT_MAX current members: its members' rows are read at every sync instead. */
  private grown(conversationId: string): void {
    if (this.stmts.markBig.run(conversationId, conversationId).changes > 0) this.stmts.bigMembers.run(conversationId);
  }

  private cursorsWritten(): void {
    this.pendingCursors.clear();
    this.pendingMarks.clear();
    clearTimeout(this.cursorTimer);
    this.cursorTimer = undefined;
  }


  private migrate(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = this.db.prepare('SELECT max(version) AS v FROM schema_version').get() as { v: number | null };
    const current = row.v ?? 0;
    for (let v = current; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(v + 1);
      })();
    }
  }

  private appendOne(d: MessageDraft, created: string[]): AppendResult {
    if (d.clientMsgId !== '') {
      const existing = this.stmts.byClientId.get(d.fromUser, d.clientMsgId);
      if (existing) return { message: toMessage(existing), duplicate: true };
    }
    if (!this.knownConversations.has(d.conversationId)) {
      if (this.stmts.createConversation.run(d.conversationId, d.kind).changes > 0) {
        for (const user of d.members) this.stmts.addMember.run(user, d.conversationId, d.sentAtMs);
      }
      created.push(d.conversationId);
    }
    const { last_seq: seq, due } = this.stmts.nextSeq.get({ at: d.sentAtMs, id: d.conversationId, change: this.change, threshold: this.change - this.slack })!;
    if (due === 1) this.due.add(d.conversationId);
    const message = draftMessage(d, seq);
    this.stmts.insertMessage.run(
      d.conversationId, seq, d.serverMsgId, d.fromUser, d.fromDevice, d.clientMsgId, d.text, d.sentAtMs,
      d.event ? eventJson(d.event) : null, d.content ? contentJson(d) : null,
    );
    for (const user of mentionedIn(d.content)) this.stmts.insertMention.run(d.conversationId, user, seq);
    this.features.refFiles(message);
    if (d.effect) this.apply(d.conversationId, seq, d.sentAtMs, d.effect);
    // Whoever writes has read everything up to what they wrote.
    this.stmts.readOwn.run(seq, d.conversationId, d.fromUser);
    return { message, duplicate: false };
  }

  private apply(conversationId: string, seq: number, atMs: number, effect: Effect): void {
    const s = this.stmts;
    switch (effect.op) {
      case 'create-group':
        s.createGroup.run(effect.groupId, effect.name, effect.owner, atMs);
        s.keepWindow.run(conversationId, effect.owner);
        s.joinMember.run(effect.owner, atMs, 'owner', seq, seq, this.change, conversationId);
        for (const user of effect.members) {
          if (user === effect.owner) continue;
          s.keepWindow.run(conversationId, user);
          s.joinMember.run(user, atMs, 'member', seq, seq - 1, this.change, conversationId);
        }
        this.grown(conversationId);
        return;
      case 'add-members':
        for (const user of effect.userIds) {
          s.keepWindow.run(conversationId, user);
          s.joinMember.run(user, atMs, 'member', seq, seq - 1, this.change, conversationId);
        }
        this.grown(conversationId);
        return;
      case 'remove-members':
        for (const user of effect.userIds) s.leaveMember.run(seq, this.change, conversationId, user);
        return;
      case 'dismiss':
        s.dismissGroup.run(groupIdOf(conversationId));
        s.leaveAll.run(seq, this.change, conversationId);
        return;
      case 'set-role':
        s.setRole.run(effect.role, conversationId, effect.userId);
        if (effect.role === 'owner') s.setOwner.run(effect.userId, groupIdOf(conversationId));
        return;
      case 'mute':
        if (effect.userId) s.muteMember.run(effect.muted ? 1 : 0, conversationId, effect.userId);
        else s.muteGroup.run(effect.muted ? 1 : 0, groupIdOf(conversationId));
        return;
      case 'recall':
        s.recall.run(effect.by, conversationId, effect.targetSeq);
        this.clearSeqs(conversationId, effect.targetSeq, effect.targetSeq + 1);
        return;
      case 'delete':
        s.deleteMessage.run(effect.by, conversationId, effect.targetSeq);
        this.clearSeqs(conversationId, effect.targetSeq, effect.targetSeq + 1);
        return;
      case 'hide':
        s.hide.run(effect.userId, effect.conversationId, effect.targetSeq);
        return;
      case 'edit':
        if (s.editMessage.run(effect.text, contentJson({ content: effect.content, editedAtMs: atMs }), conversationId, effect.targetSeq).changes === 0) return;
        s.clearMentions.run(conversationId, effect.targetSeq);
        for (const user of mentionedIn(effect.content)) s.insertMention.run(conversationId, user, effect.targetSeq);
        return;
    }
  }

  /** What hangs off messages [from, to) that are gone: their mentions and reactions. */
  private clearSeqs(conversationId: string, from: number, to: number): void {
    const s = this.stmts;
    if (to === from + 1) s.clearMentions.run(conversationId, from);
    else if (from === 0) s.clearMentionsBelow.run(conversationId, to);
    else s.clearMentionsFrom.run(conversationId, from);
    s.clearReactions.run(conversationId, from, to);
    s.clearReactionCounts.run(conversationId, from, to);
    // A recalled or deleted message stays where it is (hidden stays hidden); expired or set aside, its seq is gone.
    if (to !== from + 1) s.clearHidden.run(conversationId, from, to);
  }

  async hiddenSeqs(userId: string, conversationId: string, seqs: readonly number[]): Promise<Set<number>> {
    if (seqs.length === 0) return new Set();
    return this.durable(new Set(this.stmts.hiddenSeqs.all(userId, conversationId, JSON.stringify([...new Set(seqs)])).map((r) => r.seq)));
  }

  async profiles(userIds: readonly string[]): Promise<Map<string, ProfileRecord>> {
    const out = new Map<string, ProfileRecord>();
    for (const id of new Set(userIds)) {
      const r = this.stmts.profile.get(id);
      if (r) out.set(id, { name: r.name, avatarUrl: r.avatar_url, updatedAtMs: r.updated_at_ms });
    }
    return this.durable(out);
  }

  async putFile(file: FileRecord): Promise<void> {
    this.features.putFile(file);
    await this.flusher?.flush();
  }

  async files(ids: readonly string[]): Promise<Map<string, FileRecord>> {
    return this.durable(this.features.files(ids));
  }

  async mayReadFile(userId: string, fileId: string): Promise<boolean> {
    return this.durable(this.features.mayReadFile(userId, fileId));
  }

  async uploadsSince(userId: string, sinceMs: number): Promise<{ count: number; bytes: number }> {
    return this.durable(this.features.uploadsSince(userId, sinceMs));
  }

  async indexForSearch(messages: readonly { conversationId: string; seq: number }[]): Promise<void> {
    this.features.indexForSearch(messages);
    await this.flusher?.flush();
  }

  async search(query: SearchQuery): Promise<ChatMessage[]> {
    return this.durable(this.features.search(query));
  }

  async putPushDevice(device: PushDeviceRecord, maxPerUser: number): Promise<void> {
    this.features.putPushDevice(device, maxPerUser);
    await this.flusher?.flush();
  }

  async removePushDevice(userId: string, deviceId: string, token?: string): Promise<void> {
    this.features.removePushDevice(userId, deviceId, token);
    await this.flusher?.flush();
  }

  async pushDevices(userIds: readonly string[]): Promise<Map<string, PushDeviceRecord[]>> {
    return this.durable(this.features.pushDevices(userIds));
  }

  async setNotifyMuted(userId: string, conversationId: string, muted: boolean): Promise<void> {
    this.features.setNotifyMuted(userId, conversationId, muted);
    await this.flusher?.flush();
  }

  async notifyMuted(conversationId: string, userIds: readonly string[]): Promise<Set<string>> {
    return this.durable(this.features.notifyMuted(conversationId, userIds));
  }

  async queueNotifications(drafts: readonly NotificationDraft[]): Promise<void> {
    if (drafts.length === 0) return;
    this.features.queueNotifications(drafts);
    await this.flusher?.flush();
  }

  async claimNotifications(nowMs: number, limit: number, leaseMs: number): Promise<PendingNotification[]> {
    const claimed = this.features.claimNotifications(nowMs, limit, leaseMs);
    if (claimed.length > 0) await this.flusher?.flush();
    return claimed;
  }

  async finishNotification(n: PendingNotification, nextDueAtMs: number): Promise<void> {
    this.features.finishNotification(n, nextDueAtMs);
    await this.flusher?.flush();
  }

  async putProfile(userId: string, profile: ProfileRecord): Promise<void> {
    this.stmts.putProfile.run(userId, profile.name, profile.avatarUrl, profile.updatedAtMs);
    await this.flusher?.flush();
  }

  async react(conversationId: string, seq: number, userId: string, emoji: string, add: boolean, atMs: number, limits: ReactionLimits): Promise<'changed' | 'unchanged' | 'too-many'> {
    const result = this.reactTx(conversationId, seq, userId, emoji, add, atMs, limits);
    if (result === 'changed') await this.flusher?.flush();
    return this.durable(result);
  }

  async reactions(conversationId: string, seqs: readonly number[], usersPerEmoji: number): Promise<Map<number, ReactionData[]>> {
    const out = new Map<number, ReactionData[]>();
    if (seqs.length === 0) return out;
    for (const r of this.stmts.reactionCounts.all(conversationId, JSON.stringify([...new Set(seqs)]))) {
      const users = this.stmts.reactionUsers.all(conversationId, r.seq, r.emoji, usersPerEmoji).map((u) => u.user_id);
      const list = out.get(r.seq);
      if (list) list.push({ emoji: r.emoji, count: r.n, users });
      else out.set(r.seq, [{ emoji: r.emoji, count: r.n, users }]);
    }
    return this.durable(out);
  }

  async dcHomes(): Promise<Map<string, HomeRecord>> {
    return new Map(this.stmts.dcHomes.all().map((r) => [r.dc, homeOf(r)]));
  }

  async putDcHome(dc: string, record: HomeRecord): Promise<HomeRecord> {
    this.stmts.putDcHome.run(dc, record.servedBy, record.epoch, record.state, record.changedAtMs);
    await this.flusher?.flush();
    return homeOf(this.stmts.dcHome.get(dc)!);
  }

  async changedSince(sinceMs: number, limit: number): Promise<ConversationChange[]> {
    return this.stmts.changedSince.all(sinceMs, limit).map((r) => ({ id: r.id, lastSeq: r.last_seq, homeDc: r.home_dc, lastAtMs: r.last_at_ms }));
  }

  async marksSince(sinceMs: number, limit: number, settleMs = 0): Promise<MarkChanges & { untilMs: number }> {
    this.writeCursorsNow();
    const n = Math.max(0, Math.floor(limit));
    const untilMs = Date.now() - settleMs;
    return this.durable({
      untilMs,
      reads: this.stmts.readsSince.all(sinceMs, untilMs, n).map((r) => ({ conversationId: r.conversation_id, userId: r.user_id, seq: r.read_seq, atMs: r.read_at_ms })),
      cursors: this.stmts.cursorsSince.all(sinceMs, untilMs, n)
        .map((r) => ({ userId: r.user_id, deviceId: r.device_id, conversationId: r.conversation_id, seq: r.delivered_seq, atMs: r.at_ms })),
      revocations: this.stmts.revocationsSince.all(sinceMs, untilMs, n).map((r) => ({ userId: r.user_id, deviceId: r.device_id, beforeMs: r.before_ms, atMs: r.at_ms })),
    });
  }

  async mergeMarks(changes: MarkChanges): Promise<{ moved: MarkChanges['reads']; missing: Pick<MarkChanges, 'reads' | 'cursors'> }> {
    const merged = this.mergeMarksTx(changes);
    await this.flusher?.flush();
    return merged;
  }

  async putRevocation(userId: string, deviceId: string, beforeMs: number): Promise<void> {
    this.stmts.putRevocation.run(userId, deviceId, beforeMs, Date.now());
    await this.flusher?.flush();
  }

  async dcState(key: string): Promise<string | undefined> {
    return this.durable(this.stmts.dcState.get(key)?.value);
  }

  async putDcState(key: string, value: string): Promise<void> {
    this.stmts.putDcState.run(key, value);
    await this.flusher?.flush();
  }

  async orphanFrom(conversationId: string, fromSeq: number, nowMs: number): Promise<number> {
    const moved = this.orphanTx(conversationId, fromSeq, nowMs);
    await this.flusher?.flush();
    return moved;
  }

  async heads(conversationIds: readonly string[]): Promise<Map<string, ConversationHead>> {
    const out = new Map<string, ConversationHead>();
    for (const id of conversationIds) {
      const row = this.stmts.conversationHead.get(id);
      if (row) out.set(id, { lastSeq: row.last_seq, homeDc: row.home_dc });
    }
    return this.durable(out);
  }

  async replicate(entries: readonly ReplicaEntry[]): Promise<boolean[]> {
    if (entries.length === 0) return [];
    const stored = this.replicateTx(entries);
    await this.flusher?.flush();
    return stored;
  }

  private replicateOne({ message: m, homeDc }: ReplicaEntry): boolean {
    const s = this.stmts;
    if (m.clientMsgId !== '') {
      // The home's copy of an idempotency key wins over a row of this datacenter's own that holds it (a tail a takeover left).
      s.orphanKeyCopy.run(Date.now(), m.fromUser, m.clientMsgId, m.conversationId, m.seq);
      s.orphanKeyDelete.run(m.fromUser, m.clientMsgId, m.conversationId, m.seq);
    }
    const inserted = s.replicaMessage.run(
      m.conversationId, m.seq, m.serverMsgId, m.fromUser, m.fromDevice, m.clientMsgId, m.text, m.sentAtMs,
      m.event ? eventJson(m.event) : null, contentJson(m), m.recalledBy ?? m.deletedBy ?? null,
    ).changes > 0;
    if (!inserted) return false;
    if (m.deletedBy === undefined) for (const user of mentionedIn(m.content)) s.insertMention.run(m.conversationId, user, m.seq);
    if (m.deletedBy === undefined && m.recalledBy === undefined) this.features.refFiles(m);
    const direct = directMembers(m.conversationId);
    if (s.replicaConversation.run(m.conversationId, direct ? 'direct' : 'group', homeDc).changes > 0 && direct) {
      for (const user of new Set(direct)) s.addMember.run(user, m.conversationId, m.sentAtMs);
    }
    s.replicaHead.run(m.seq, m.sentAtMs, m.conversationId);
    const effect = effectOfEvent(m.conversationId, m);
    if (effect) this.apply(m.conversationId, m.seq, m.sentAtMs, effect);
    s.readOwn.run(m.seq, m.conversationId, m.fromUser);
    return true;
  }

  async append(drafts: readonly MessageDraft[]): Promise<AppendResult[]> {
    if (drafts.length === 0) return [];
    const results = this.appendTx(drafts);
    await this.flusher?.flush();
    return results;
  }

  /**
   * A read returns only once what it saw is on disk: a message committed and
   * still waiting for its flush must not reach a device (after a power loss its
   * seq could be given to another message, which that device would drop).
   */
  private async durable<T>(result: T): Promise<T> {
    await this.flusher?.durable();
    return result;
  }

  async after(conversationId: string, afterSeq: number, limit: number, maxSeq = NO_LIMIT): Promise<ChatMessage[]> {
    return this.durable(this.stmts.after.all(conversationId, afterSeq, maxSeq, limit).map(toMessage));
  }

  async before(conversationId: string, beforeSeq: number, limit: number, minSeq = 0): Promise<ChatMessage[]> {
    const upper = beforeSeq > 0 ? beforeSeq : NO_LIMIT;
    return this.durable(this.stmts.before.all(conversationId, upper, minSeq, limit).map(toMessage).reverse());
  }

  async message(conversationId: string, seq: number): Promise<ChatMessage | undefined> {
    const row = this.stmts.one.get(conversationId, seq);
    return this.durable(row ? toMessage(row) : undefined);
  }

  async messageByRequest(fromUser: string, clientMsgId: string): Promise<ChatMessage | undefined> {
    if (clientMsgId === '') return undefined;
    const row = this.stmts.byClientId.get(fromUser, clientMsgId);
    return this.durable(row ? toMessage(row) : undefined);
  }

  async unreadCount(conversationId: string, userId: string, afterSeq: number, maxSeq: number): Promise<number> {
    if (maxSeq <= afterSeq) return 0;
    return this.stmts.unread.get(conversationId, afterSeq, maxSeq, userId, UNREAD_COUNT_MAX)!.n;
  }

  /**
   * Retention (store.ts): the stored head (rowid order, which within a
   * conversation is seq order: one writer appends), as far as its messages
   * are older than the cutoff and at most `limit` of them, goes in one range
   * delete on the rowid, each conversation's floor raised past what went, in
   * one transaction.
   */
  async expireBefore(cutoffMs: number, limit: number): Promise<number> {
    if (!(limit >= 1)) return 0;
    const removed = this.expireTx(cutoffMs, Math.floor(limit));
    if (removed > 0) await this.flusher?.flush();
    return removed;
  }

  /** No partitions here: retention removes rows (expireBefore). */
  async expireByPartition(): Promise<undefined> {
    return undefined;
  }

  async pastWindows(conversationId: string, userId: string): Promise<{ fromSeq: number; toSeq: number }[]> {
    return this.durable(this.stmts.pastWindows.all(conversationId, userId).map((r) => ({ fromSeq: r.joined_seq, toSeq: r.left_seq })));
  }

  async members(conversationId: string): Promise<string[]> {
    return this.stmts.members.all(conversationId).map((r) => r.user_id);
  }

  async isMember(conversationId: string, userId: string): Promise<boolean> {
    const row = this.stmts.membership.get(conversationId, userId);
    return row !== undefined && row.left_seq === null;
  }

  async membership(conversationId: string, userId: string): Promise<Membership | undefined> {
    const r = this.stmts.membership.get(conversationId, userId);
    if (!r) return undefined;
    const m: Membership = { role: r.role as GroupRoleName, muted: r.muted === 1, joinedSeq: r.joined_seq, readSeq: r.read_seq };
    if (r.left_seq !== null) m.leftSeq = r.left_seq;
    return m;
  }

  async memberships(conversationId: string, userIds: readonly string[]): Promise<Map<string, Membership>> {
    const out = new Map<string, Membership>();
    for (const userId of new Set(userIds)) {
      const m = await this.membership(conversationId, userId);
      if (m) out.set(userId, m);
    }
    return out;
  }

  async listForUser(userId: string): Promise<ConversationState[]> {
    return this.durable(this.stmts.listForUser.all(userId).map(stateOf));
  }

  /** A full sync (store.ts, "Sync"): as PostgresStore's, the horizon being the next change number less the slack (one writer). */
  async syncScan(
    userId: string, deviceId: string, cursors: ReadonlyMap<string, number>, limit: number, options: SyncReadOptions & { from?: SyncPosition },
  ): Promise<SyncScan> {
    if (options.delivered) this.writeCursorsNow(); // the device's acks so far count
    const want = Math.max(0, Math.floor(limit)) + 1;
    const from = options.from ?? { changeNo: 0, conversationId: '' };
    const horizon = Math.max(0, this.stmts.nextChangeNo.get()!.n - this.slack);
    const rows = this.stmts.syncScan.all({
      user: userId, device: deviceId, given: JSON.stringify(Object.fromEntries(cursors)), delivered: options.delivered ? 1 : 0,
      no: from.changeNo, id: from.conversationId, limit: want + cursors.size,
    });
    const content = rows.filter((r) => r.content === 1);
    return this.durable({
      conversations: [...rows.filter((r) => r.content !== 1), ...content.slice(0, want)].map(syncConversationOf),
      cut: content.length > want - 1,
      horizon,
    });
  }

  async syncStates(
    userId: string, deviceId: string, conversationIds: readonly string[], cursors: ReadonlyMap<string, number>, options: SyncReadOptions,
  ): Promise<SyncConversation[]> {
    if (conversationIds.length === 0) return [];
    if (options.delivered) this.writeCursorsNow();
    const rows = this.stmts.syncStates.all({
      user: userId, device: deviceId, given: JSON.stringify(Object.fromEntries(cursors)), delivered: options.delivered ? 1 : 0,
      ids: JSON.stringify([...new Set(conversationIds)]),
    });
    return this.durable(rows.map(syncConversationOf));
  }

  async conversationPage(userId: string, limit: number, after: ConversationCursor | undefined, previewChars: number): Promise<ConversationOverview[]> {
    const s = this.stmts;
    this.writeCursorsNow(); // so the peers' delivered marks are current
    const rows = s.listPage.all(userId, after?.atMs ?? Number.MAX_SAFE_INTEGER, after?.atMs ?? Number.MAX_SAFE_INTEGER, after?.conversationId ?? '', limit);
    return this.durable(rows.map((r) => {
      const c = stateOf(r);
      const last = c.lastSeq > 0 ? s.lastVisible.get(previewChars, c.conversationId, c.lastSeq, c.joinedSeq) : undefined;
      const readFrom = Math.max(c.readSeq, c.joinedSeq - 1);
      const overview: ConversationOverview = {
        ...c,
        readSeq: Math.min(c.readSeq, c.lastSeq),
        lastTruncated: last !== undefined && last.whole > previewChars,
        unread: c.lastSeq > readFrom ? s.unread.get(c.conversationId, readFrom, c.lastSeq, userId, UNREAD_COUNT_MAX)!.n : 0,
      };
      if (last) overview.lastMessage = toMessage(last);
      if (c.lastSeq > readFrom && s.mentioned.get(c.conversationId, userId, readFrom, c.lastSeq)) overview.mentioned = true;
      const peerUser = directPeer(c.conversationId, userId);
      if (peerUser !== undefined) {
        const peer = s.peerRead.get(c.conversationId, peerUser);
        overview.peerReadSeq = peer?.read_seq ?? 0;
        overview.peerDeliveredSeq = peer?.delivered_seq ?? 0;
      }
      else overview.groupName = s.groupRow.get(groupIdOf(c.conversationId))?.name ?? '';
      return overview;
    }));
  }

  async blocked(userId: string, limit: number): Promise<string[]> {
    return this.durable(this.stmts.blocked.all(userId, limit).map((r) => r.blocked_id));
  }

  async setBlocked(userId: string, peer: string, blocked: boolean, max: number): Promise<boolean> {
    if (blocked) {
      if (this.stmts.blocks.get(userId, peer)) return this.durable(true);
      if (this.stmts.blockCount.get(userId)!.n >= max) return false;
      this.stmts.block.run(userId, peer, Date.now());
    } else {
      this.stmts.unblock.run(userId, peer);
    }
    await this.flusher?.flush();
    return true;
  }

  async blockersOf(peer: string, userIds: readonly string[]): Promise<Set<string>> {
    return this.durable(new Set(userIds.filter((u) => this.stmts.blocks.get(u, peer) !== undefined)));
  }

  async membersAt(conversationId: string, seq: number): Promise<string[]> {
    return this.stmts.membersAt.all({ conversation: conversationId, seq }).map((r) => r.user_id);
  }

  async largeGroups(conversationIds: readonly string[]): Promise<Set<string>> {
    return new Set([...new Set(conversationIds)].filter((id) => this.stmts.isLarge.get(id) !== undefined));
  }

  async memberWindows(conversationId: string, sinceSeq: number): Promise<{ lastSeq: number; windows: MemberWindow[] }> {
    // One writer: both reads see the same state.
    const head = this.stmts.lastSeq.get(conversationId);
    if (!head) return { lastSeq: 0, windows: [] };
    const windows = this.stmts.memberWindows.all(conversationId, sinceSeq).map((r): MemberWindow => (r.left_seq === null
      ? { userId: r.user_id, joinedSeq: r.joined_seq }
      : { userId: r.user_id, joinedSeq: r.joined_seq, leftSeq: r.left_seq }));
    return { lastSeq: head.last_seq, windows };
  }

  async writersTo(reader: string, writers: readonly string[]): Promise<Set<string>> {
    return new Set([...new Set(writers)].filter((w) => this.stmts.hasWrittenTo.get(reader, w) !== undefined));
  }

  async groupCounts(userIds: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const u of new Set(userIds)) {
      const n = this.stmts.groupCount.get(u)!.n;
      if (n > 0) out.set(u, n);
    }
    return out;
  }

  async groupMeta(groupId: string): Promise<GroupMeta | undefined> {
    const g = this.stmts.groupRow.get(groupId);
    if (!g) return undefined;
    return {
      groupId: g.id,
      conversationId: `g:${groupId}`,
      name: g.name,
      owner: g.owner,
      mutedAll: g.muted_all === 1,
      dismissed: g.dismissed === 1,
      createdAtMs: g.created_at_ms,
    };
  }

  async group(groupId: string): Promise<GroupRecord | undefined> {
    const meta = await this.groupMeta(groupId);
    if (!meta) return undefined;
    const members = this.stmts.groupMembers.all(meta.conversationId)
      .map((m) => ({ userId: m.user_id, role: m.role as GroupRoleName, muted: m.muted === 1, readSeq: m.read_seq }));
    return { ...meta, members };
  }

  async markRead(conversationId: string, userId: string, seq: number): Promise<number> {
    this.stmts.markRead.run({ seq, now: Date.now(), conversation: conversationId, user: userId });
    const readSeq = this.stmts.membership.get(conversationId, userId)?.read_seq ?? 0;
    await this.flusher?.flush();
    return readSeq;
  }

  async readCursors(conversationId: string): Promise<Map<string, number>> {
    return new Map(this.stmts.readCursors.all(conversationId).map((r) => [r.user_id, r.read_seq]));
  }

  async advanceDelivered(
    updates: readonly { userId: string; deviceId: string; conversationId: string; seq: number }[],
  ): Promise<DeliveredMark[]> {
    // Delivery cursors only save a reconnecting device from receiving again what it has (it
    // drops repeats by seq), so they are not worth a transaction of their own: they ride in the
    // next message transaction, or are written after CURSOR_DELAY_MS when no message comes.
    if (this.closing) return [];
    const moved = new Map<string, DeliveredMark>();
    for (const u of updates) {
      const key = `${u.userId}\u0000${u.deviceId}\u0000${u.conversationId}`;
      const prev = this.pendingCursors.get(key);
      if (!prev || prev.seq < u.seq) this.pendingCursors.set(key, u);
      // The user's mark in a 1:1 is decided now (this process is the store's only writer), written with the cursors.
      if (!directMembers(u.conversationId)) continue;
      const markKey = `${u.conversationId}\u0000${u.userId}`;
      const row = this.stmts.deliveredMark.get(this.pendingMarks.get(markKey)?.seq ?? 0, u.seq, u.conversationId, u.userId);
      if (!row) continue;
      const seq = Math.min(u.seq, row.last_seq);
      if (seq <= row.from_seq) continue;
      const mark = { userId: u.userId, conversationId: u.conversationId, seq };
      this.pendingMarks.set(markKey, mark);
      if (moved.has(markKey) || row.peer_wrote === 1) moved.set(markKey, mark);
    }
    if (this.pendingCursors.size > 0) {
      this.cursorTimer ??= setTimeout(() => {
        try {
          this.cursorTx();
        } catch (err) {
          // Kept for the next message transaction; a lost cursor only means repeats the device drops.
          this.cursorTimer = undefined;
          logger.warn({ err }, 'delivery cursor write failed');
        }
      }, CURSOR_DELAY_MS);
    }
    return [...moved.values()];
  }

  /**
   * Write the cursors waiting, for a read that shows them. A failure is only
   * logged: they stay pending for the next transaction, and the read answers
   * with what was written before.
   */
  private writeCursorsNow(): void {
    if (this.pendingCursors.size === 0) return;
    try {
      this.cursorTx();
    } catch (err) {
      logger.warn({ err }, 'delivery cursor write failed');
    }
  }

  async delivered(userId: string, deviceId: string): Promise<Map<string, number>> {
    this.writeCursorsNow();
    return new Map(this.stmts.delivered.all(userId, deviceId).map((r) => [r.conversation_id, r.delivered_seq]));
  }

  async riskRules(): Promise<RiskRulesRecord | undefined> {
    const r = this.stmts.riskRules.get();
    return this.durable(r ? { version: r.version, document: r.document, updatedAtMs: r.updated_at_ms } : undefined);
  }

  async riskRulesVersion(): Promise<number> {
    return this.durable(this.stmts.riskRulesVersion.get()?.version ?? 0);
  }

  async putRiskRules(document: string, nowMs: number): Promise<number> {
    // One statement: this process is the store's only writer, so versions never repeat.
    const { version } = this.stmts.putRiskRules.get(document, nowMs)!;
    await this.flusher?.flush();
    return version;
  }

  async appendRiskAudit(entries: readonly RiskAuditDraft[]): Promise<void> {
    if (entries.length === 0) return;
    this.riskAuditTx(entries);
    await this.flusher?.flush();
  }

  async riskAudit(query: { limit: number; beforeId?: number; userId?: string }): Promise<RiskAuditEntry[]> {
    if (!(query.limit >= 1)) return [];
    const limit = Math.floor(query.limit);
    const before = query.beforeId ?? NO_LIMIT;
    const rows = query.userId === undefined
      ? this.stmts.riskAudit.all(before, limit)
      : this.stmts.riskAuditByUser.all(query.userId, before, limit);
    return this.durable(rows.map(toRiskAuditEntry));
  }

  async webhookSecret(candidate: string): Promise<string> {
    if (this.stmts.insertSetting.run(WEBHOOK_SECRET_KEY, candidate).changes > 0) await this.flusher?.flush();
    return this.durable(this.stmts.setting.get(WEBHOOK_SECRET_KEY)!.value);
  }

  async firstSeen(userIds: readonly string[], nowMs: number): Promise<Map<string, number>> {
    if (userIds.length === 0) return new Map();
    const { wrote, out } = this.firstSeenTx([...new Set(userIds)], nowMs);
    if (wrote) await this.flusher?.flush();
    return this.durable(out);
  }

  /** Idempotent: every call waits for the one closing. */
  close(): Promise<void> {
    return (this.closing ??= this.shutDown());
  }

  private async shutDown(): Promise<void> {
    if (this.pendingCursors.size > 0) this.cursorTx();
    clearTimeout(this.cursorTimer);
    if (this.checkpointer) {
      this.checkpointer.worker.ref(); // so the wait for it keeps the process up
      this.checkpointer.worker.postMessage('stop'); // (nothing happens if it already died: `exited` has resolved)
      await this.checkpointer.exited;
    }
    this.db.close();
    if (this.flusher) closeSync(this.flusher.fd);
  }
}

/** The WAL file SQLite keeps beside the database while it is open (same inode across WAL restarts). */
function openWal(path: string): number | undefined {
  try {
    return openSync(path, 'r+');
  } catch {
    return undefined; // no WAL file: SQLite's own synchronous=FULL does the flushing
  }
}

/** SQLite's errors as the store's typed errors (store.ts). */
function classifySqliteError(err: unknown): Error | undefined {
  if (err instanceof FencedError || err instanceof StoreUnavailableError || err instanceof StoreDataError) return undefined;
  const code = (err as { code?: unknown } | null)?.code;
  const message = (err as Error | null)?.message ?? String(err);
  if (typeof code === 'string') {
    if (code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG') return new StoreDataError(message, { cause: err });
    if (/^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|NOMEM|READONLY)/.test(code)) return new StoreUnavailableError(message, { cause: err });
  }
  // A WAL that could not be flushed fails the store until it is restarted: unavailable, not the data's fault.
  if (/WAL could not be flushed|database connection is not open|store is clos/i.test(message)) return new StoreUnavailableError(message, { cause: err });
  return undefined;
}

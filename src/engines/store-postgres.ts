// PostgreSQL store for the distributed roles: the same contract and the same
// semantics as SqliteStore (test/engines/store.contract.ts runs against both).
//
// Layout: `messages` has an identity (BIGINT) primary key that only grows, so
// inserts append to the heap and to the right edge of the primary key;
// (conversation_id, seq) serves sync and history, and a partial unique index
// on (from_user, client_msg_id) WHERE client_msg_id <> '' is the idempotency
// key (an empty id never dedupes); each partition has these (see "Partitions"). Identifier columns use the "C" collation:
// byte order, as in SQLite, whatever the database's locale, and cheaper
// index comparisons.
//
// append() is one transaction and a fixed number of round trips per batch,
// however many messages it holds:
//   1. one SELECT finds the batch's client ids already stored (each locked
//      as the transaction began, in the same round trip as BEGIN: they are
//      unique per partition only, see "Partitions");
//   2. one upsert on `conversations`, one row per distinct conversation in id
//      order (so concurrent batches lock rows in the same order and cannot
//      deadlock), adds k to last_seq and RETURNs it: seqs last-k+1..last are
//      this batch's, and the row lock held to commit makes concurrent writers
//      of a conversation wait, so seqs have no gaps whoever calls;
//   3. one INSERT of the members of conversations the upsert created;
//   4. one multi-row INSERT (unnest of column arrays) of the messages;
//   5. the group effects, in draft order (events are rare next to messages);
//   6. when the batch has a group whose member rows' change number is not
//      recent (step 2 says which), one SELECT of its members who may see
//      what the batch stored there;
//   7. one UPDATE of the member rows: the writers' read cursors, and the
//      change index (store.ts, "Sync": the members who may see what the
//      batch stored have something to read) in the conversations whose
//      member rows' change number is not recent already (the change slack),
//      rows locked in one order (LOCK_MEMBERS: no deadlock with acks).
// A conversation whose members' change numbers are recent writes none of
// them: a busy conversation's member rows are written for the change index
// about once per slack, not once per batch.
// A concurrent batch with one of the same (from_user, client_msg_id) waits in
// step 1 for the first to commit, then finds the key stored (a duplicate, as
// it should be). (Each partition's unique index on the key stays: a batch
// that fails on it is retried, and finds the key in step 1.)
//
// Partitions: `messages` is partitioned by RANGE of its identity, that is by
// storage order, so by time: partition k holds ids [k·2^32, (k+1)·2^32), and
// retention rolls to the next one every span (an eighth of the retention
// period, at least an hour) by moving the identity to its first id. Why time
// (storage order) and not a hash of the conversation:
//   - Retention drops whole partitions (store.ts, "Retention"): a partition
//     is a range of storage order, so the oldest one is a prefix of every
//     conversation, exactly what retention removes; no row deleted, no bloat
//     left to vacuum. With hash partitions old messages are in every
//     partition, and retention would still delete rows.
//   - Inserts go to the newest partition only: its indexes (conversation,
//     seq) and (sender, client id), whose inserts land anywhere in them, stay
//     the size of one span and in memory as the table grows; with hash
//     partitions every partition's indexes take inserts, and together they
//     are as large as one.
//   - Not the sent time itself: a message stamped by a clock ahead would land
//     in a later partition than messages stored after it in its conversation,
//     and a dropped partition would no longer be a prefix of every
//     conversation.
// What it costs: a read of a conversation (sync, history) cannot be pruned to
// one partition and looks into each one's (conversation_id, seq) index; the
// span keeps them about nine (none more without retention: everything stays
// in the first). And unique indexes cannot span partitions (they would have to
// hold the partition key): (conversation_id, seq) and (from_user,
// client_msg_id) are unique per partition; across them, seqs are unique as
// assigned (under the conversation's row lock; a copy from another datacenter
// checks under the same lock), and idempotency keys are locked by the batch
// that looks them up (beginWithKeys, step 1 below). A database from before
// partitions is converted in place (migration 11): its table becomes the
// first partition.
//
// Fencing (see store.ts): under a write fence, the transaction first takes
// (a new owner's first write: epoch + 1, row locked to commit) or checks
// (FOR SHARE: a taker waits for us to commit) the `shard_fences` row of each
// shard of the batch, and rolls back with FencedError when an epoch is not the
// writer's or its lease ran out meanwhile. The epoch lives here, not in Redis:
// Redis may lose a counter when it restarts; a commit here is durable.
import { createHash } from 'node:crypto';
import pg from 'pg';
import { ErrorCode, LonglinkError, type ChatMessage, type GroupRoleName, type ReactionData, type TimelineEventData } from '../protocol/index.js';
import { directMembers } from '../protocol/ids.js';
import {
  WEBHOOK_SECRET_KEY, contentJson, draftMessage, effectOfEvent, eventJson, mentionedIn, homeOf, type HomeRow, groupIdOf, toMessage, toRiskAuditEntry, toState, type MessageRow, type RiskAuditRow, type StateColumns,
} from './store-rows.js';
import {
  CHANGE_ALWAYS, CHANGE_FANOUT_MAX, PAST_WINDOWS_MAX, UNREAD_COUNT_MAX, FencedError, SendersRefusedError, StoreDataError, StoreUnavailableError, currentWriteFence, withTypedErrors,
  type AppendResult, type ConversationCursor, type ConversationHead, type ReplicaEntry, type HomeRecord, type ConversationChange, type ConversationKind, type ConversationOverview, type ConversationState, type DeliveredMark, type Effect, type GroupMeta, type GroupRecord, type Membership,
  type MarkChanges, type MessageDraft, type ProfileRecord, type ReactionLimits, type RiskAuditDraft, type RiskAuditEntry, type RiskRulesRecord, type ShardClaim, type Store, type WriteFence,
  type SyncConversation, type SyncPosition, type SyncReadOptions, type SyncScan, type MemberWindow,
  type FileRecord, type SearchQuery, type PushDeviceRecord, type NotificationDraft, type PendingNotification,
} from './store.js';
import { PostgresFeatures, refFiles } from './postgres-features.js';

export interface PostgresStoreOptions {
  /** postgres://user@host:port/database */
  url: string;
  /** Connections in the pool. @default 10 */
  poolSize?: number;
  /**
   * A schema to hold the tables, created if missing and put first on every
   * connection's search_path (several stores in one database). Lowercase
   * letters, digits and underscores. @default the connection's search_path
   */
  schema?: string;
  /**
   * A transaction idle this long (its process paused or stuck between two
   * statements) is ended by the server, so the rows it locked (a shard's
   * fence, conversations) do not block the node that took its shards over.
   * @default 5000
   */
  idleInTransactionMs?: number;
  /** Apply the first this many migrations only (tests of a migration, on a database as an older version left it). @default all */
  migrations?: number;
  /**
   * The change slack (store.ts, "Sync"), in transaction ids: a membership
   * whose change number is within it of a writer's is not written again,
   * and a sync token stays this far behind the oldest transaction running.
   * The same for every store on one database (a writer with a larger slack
   * than a reader's could skip a row that reader's token passes). Tests use
   * 0 (every row written, tokens as close as can be). @default POSTGRES_CHANGE_SLACK
   */
  changeSlack?: number;
}

/**
 * The default change slack: 2^16 transaction ids (every transaction that
 * writes draws one: appends, acks, read marks, ...), a few seconds of a busy
 * database, minutes of a quiet one. A member row of a conversation that
 * stays busy is written about once per slack; a sync reads again the user's
 * memberships changed within it.
 */
export const POSTGRES_CHANGE_SLACK = 65_536;

/** Ids per partition of `messages` (see "Partitions"): partition k holds ids [k·2^32, (k+1)·2^32); the first from MINVALUE. */
const PARTITION_IDS = 2 ** 32;
/** Now on the database's clock, in ms: what a datacenter's changes are stamped with (one clock however many nodes write). */
const NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::int8';

/** Each entry runs once, in order, in the transaction that records its version. */
const MIGRATIONS: string[] = [
  `CREATE TABLE conversations (
     id TEXT COLLATE "C" PRIMARY KEY,
     kind TEXT NOT NULL,
     last_seq BIGINT NOT NULL DEFAULT 0,
     last_at_ms BIGINT NOT NULL DEFAULT 0
   );
   CREATE TABLE members (
     user_id TEXT COLLATE "C" NOT NULL,
     conversation_id TEXT COLLATE "C" NOT NULL,
     joined_at_ms BIGINT NOT NULL,
     role TEXT NOT NULL DEFAULT 'member',
     muted BOOLEAN NOT NULL DEFAULT false,
     joined_seq BIGINT NOT NULL DEFAULT 1,
     left_seq BIGINT,
     read_seq BIGINT NOT NULL DEFAULT 0,
     PRIMARY KEY (user_id, conversation_id)
   );
   CREATE INDEX members_by_conversation ON members (conversation_id);
   CREATE TABLE messages (
     id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     conversation_id TEXT COLLATE "C" NOT NULL,
     seq BIGINT NOT NULL,
     server_msg_id TEXT NOT NULL,
     from_user TEXT COLLATE "C" NOT NULL,
     from_device TEXT NOT NULL,
     client_msg_id TEXT COLLATE "C" NOT NULL,
     text TEXT NOT NULL,
     sent_at_ms BIGINT NOT NULL,
     event TEXT,
     recalled_by TEXT
   );
   CREATE UNIQUE INDEX messages_by_seq ON messages (conversation_id, seq);
   CREATE UNIQUE INDEX messages_by_client_id ON messages (from_user, client_msg_id) WHERE client_msg_id <> '';
   CREATE TABLE device_cursors (
     user_id TEXT COLLATE "C" NOT NULL,
     device_id TEXT COLLATE "C" NOT NULL,
     conversation_id TEXT COLLATE "C" NOT NULL,
     delivered_seq BIGINT NOT NULL,
     PRIMARY KEY (user_id, device_id, conversation_id)
   );
   CREATE TABLE groups (
     id TEXT COLLATE "C" PRIMARY KEY,
     name TEXT NOT NULL,
     owner TEXT NOT NULL,
     muted_all BOOLEAN NOT NULL DEFAULT false,
     dismissed BOOLEAN NOT NULL DEFAULT false,
     created_at_ms BIGINT NOT NULL
   );`,
  // One row per uplink shard: the epoch of its current writer (see fencing above).
  `CREATE TABLE shard_fences (
     shard INTEGER PRIMARY KEY,
     epoch BIGINT NOT NULL,
     owner TEXT NOT NULL,
     held_at BIGINT NOT NULL,
     taken_at TIMESTAMPTZ NOT NULL DEFAULT now()
   );`,
  // Earlier membership windows of users who left a group and joined it again.
  `CREATE TABLE member_windows (
     conversation_id TEXT COLLATE "C" NOT NULL,
     user_id TEXT COLLATE "C" NOT NULL,
     joined_seq BIGINT NOT NULL,
     left_seq BIGINT NOT NULL,
     PRIMARY KEY (conversation_id, user_id, joined_seq)
   );`,
  // Whether a member has written in the conversation (a message or an action): who counts as a contact.
  `ALTER TABLE members ADD COLUMN wrote BOOLEAN NOT NULL DEFAULT false;
   UPDATE members m SET wrote = true FROM (SELECT DISTINCT conversation_id, from_user FROM messages) x
   WHERE m.conversation_id = x.conversation_id AND m.user_id = x.from_user;`,
  // 1:1 delivered marks: each member's highest device cursor ("delivered" for the other side).
  `ALTER TABLE members ADD COLUMN delivered_seq BIGINT NOT NULL DEFAULT 0;
   UPDATE members m SET delivered_seq = x.seq FROM (SELECT user_id, conversation_id, max(delivered_seq) AS seq
     FROM device_cursors WHERE conversation_id >= 'u:' AND conversation_id < 'u;' GROUP BY user_id, conversation_id) x
   WHERE m.conversation_id = x.conversation_id AND m.user_id = x.user_id;`,
  // Retention: the first seq a conversation still holds (every lower one expired; see store.ts).
  `ALTER TABLE conversations ADD COLUMN retained_from_seq BIGINT NOT NULL DEFAULT 1;`,
  // Risk control: the rules document (one row), its audit trail, shared settings (the webhook secret), first-seen times.
  `CREATE TABLE risk_rules (
     id SMALLINT PRIMARY KEY CHECK (id = 1),
     version BIGINT NOT NULL,
     document TEXT NOT NULL,
     updated_at_ms BIGINT NOT NULL
   );
   CREATE TABLE risk_audit (
     id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     at_ms BIGINT NOT NULL,
     user_id TEXT COLLATE "C" NOT NULL,
     rule TEXT NOT NULL,
     action TEXT NOT NULL,
     detail TEXT NOT NULL
   );
   CREATE INDEX risk_audit_by_user ON risk_audit (user_id, id);
   CREATE TABLE settings (
     key TEXT COLLATE "C" PRIMARY KEY,
     value TEXT NOT NULL
   );
   CREATE TABLE risk_first_seen (
     user_id TEXT COLLATE "C" PRIMARY KEY,
     first_seen_ms BIGINT NOT NULL
   );`,
  // Datacenters: the home of a conversation copied from another one ('' for one created here).
  `ALTER TABLE conversations ADD COLUMN home_dc TEXT NOT NULL DEFAULT '';
   CREATE INDEX conversations_by_activity ON conversations (last_at_ms);
   CREATE TABLE dc_homes (
     dc TEXT COLLATE "C" PRIMARY KEY,
     served_by TEXT NOT NULL,
     epoch BIGINT NOT NULL,
     state TEXT NOT NULL,
     changed_at_ms BIGINT NOT NULL
   );
   CREATE TABLE orphaned_messages (
     id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     orphaned_at_ms BIGINT NOT NULL,
     conversation_id TEXT COLLATE "C" NOT NULL,
     seq BIGINT NOT NULL,
     server_msg_id TEXT NOT NULL,
     from_user TEXT NOT NULL,
     from_device TEXT NOT NULL,
     client_msg_id TEXT NOT NULL,
     text TEXT NOT NULL,
     sent_at_ms BIGINT NOT NULL,
     event TEXT,
     recalled_by TEXT
   );`,
  // Datacenters: read marks, delivered cursors and revocations stamped when they change here (the others copy them).
  `ALTER TABLE members ADD COLUMN read_at_ms BIGINT NOT NULL DEFAULT 0;
   CREATE INDEX members_by_read_change ON members (read_at_ms) WHERE read_at_ms > 0;
   ALTER TABLE device_cursors ADD COLUMN at_ms BIGINT NOT NULL DEFAULT 0;
   CREATE INDEX device_cursors_by_change ON device_cursors (at_ms) WHERE at_ms > 0;
   CREATE TABLE revocations (
     user_id TEXT COLLATE "C" NOT NULL,
     device_id TEXT COLLATE "C" NOT NULL,
     before_ms BIGINT NOT NULL,
     at_ms BIGINT NOT NULL,
     PRIMARY KEY (user_id, device_id)
   );
   CREATE INDEX revocations_by_change ON revocations (at_ms) WHERE at_ms > 0;
   CREATE TABLE dc_state (
     key TEXT COLLATE "C" PRIMARY KEY,
     value TEXT NOT NULL
   );`,
  // Sync: the per-user change index (store.ts, "Sync"): each membership's change number, in change order per user
  // (0 for what was there before: a device's first sync reads it all once), each device's position in that order,
  // and the groups too large to be written to on every message (their members' rows always read).
  `ALTER TABLE members ADD COLUMN change_no BIGINT NOT NULL DEFAULT 0;
   ALTER TABLE conversations ADD COLUMN fanout BOOLEAN NOT NULL DEFAULT true;
   UPDATE conversations c SET fanout = false FROM (SELECT conversation_id FROM members WHERE left_seq IS NULL
     GROUP BY conversation_id HAVING count(*) > ${CHANGE_FANOUT_MAX}) big WHERE c.id = big.conversation_id;
   UPDATE members m SET change_no = ${CHANGE_ALWAYS} FROM conversations c
     WHERE c.id = m.conversation_id AND NOT c.fanout AND m.left_seq IS NULL;
   CREATE INDEX members_by_change ON members (user_id, change_no, conversation_id);
   CREATE TABLE device_sync (
     user_id TEXT COLLATE "C" NOT NULL,
     device_id TEXT COLLATE "C" NOT NULL,
     change_no BIGINT NOT NULL,
     conversation_id TEXT COLLATE "C" NOT NULL,
     PRIMARY KEY (user_id, device_id)
   );`,
  // Messages partitioned by storage order (see "Partitions" at the top): the table as it was becomes the first
  // partition as it is (no row moved or rewritten, its indexes kept; attaching it reads it once, to check its ids),
  // up to a multiple of PARTITION_IDS above its highest id; the next ones are made as retention rolls to them.
  // Its rows, if any, predate the partitions: retention removes them row by row (by_rows) until it can drop it.
  `CREATE TABLE message_partitions (
     part INTEGER PRIMARY KEY,
     lower_id BIGINT NOT NULL,
     upper_id BIGINT NOT NULL,
     opened_at_ms BIGINT NOT NULL,
     closed_xmax BIGINT,
     floors_after TEXT COLLATE "C" NOT NULL DEFAULT '',
     floors_done BOOLEAN NOT NULL DEFAULT false,
     by_rows BOOLEAN NOT NULL DEFAULT false
   );
   DO $$
   DECLARE
     top BIGINT := coalesce((SELECT max(id) FROM messages), 0);
     upper BIGINT := (top / ${PARTITION_IDS} + 1) * ${PARTITION_IDS};
   BEGIN
     ALTER TABLE messages ALTER COLUMN id DROP IDENTITY;
     ALTER TABLE messages RENAME TO messages_0;
     ALTER INDEX messages_pkey RENAME TO messages_0_pkey;
     ALTER INDEX messages_by_seq RENAME TO messages_0_by_seq;
     ALTER INDEX messages_by_client_id RENAME TO messages_0_by_client_id;
     CREATE TABLE messages (
       id BIGINT GENERATED ALWAYS AS IDENTITY,
       conversation_id TEXT COLLATE "C" NOT NULL,
       seq BIGINT NOT NULL,
       server_msg_id TEXT NOT NULL,
       from_user TEXT COLLATE "C" NOT NULL,
       from_device TEXT NOT NULL,
       client_msg_id TEXT COLLATE "C" NOT NULL,
       text TEXT NOT NULL,
       sent_at_ms BIGINT NOT NULL,
       event TEXT,
       recalled_by TEXT,
       PRIMARY KEY (id)
     ) PARTITION BY RANGE (id);
     EXECUTE format('ALTER TABLE messages ATTACH PARTITION messages_0 FOR VALUES FROM (MINVALUE) TO (%s)', upper);
     PERFORM setval(pg_get_serial_sequence('messages', 'id'), top + 1, false);
     INSERT INTO message_partitions (part, lower_id, upper_id, opened_at_ms, by_rows) VALUES (0, 0, upper, ${NOW_MS}, top > 0);
   END $$;`,
  // Sync tokens held by clients (store.ts, "Sync") replace the devices' positions in device_sync, which this version
  // neither reads nor writes. The table stays for the nodes of the previous version still running in a rolling
  // upgrade (they read and write it at every sync), but its rows no longer move: a position taken now could pass a
  // member row this version leaves as it is for the change slack, and such a node would skip that conversation. One
  // taken before this migration is below every change number written after it, so from there those nodes read all
  // that changed (more rows than they used to, never fewer). A later version drops it.
  // A conversation's members_change_no: at or below the change number of every member row a write there must change
  // (see appendBatch); 0, before this migration: its member rows are written at its next write.
  `ALTER TABLE conversations ADD COLUMN members_change_no BIGINT NOT NULL DEFAULT 0;
   CREATE FUNCTION device_sync_frozen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
   CREATE TRIGGER device_sync_frozen BEFORE INSERT OR UPDATE ON device_sync FOR EACH ROW EXECUTE FUNCTION device_sync_frozen();`,
  // Rich messages: content parts, edit time and tombstone (store-rows.ts, contentJson), the mentions index behind a
  // conversation's "mentioned" flag ('*': everyone), and who blocks whom.
  `ALTER TABLE messages ADD COLUMN content TEXT;
   ALTER TABLE orphaned_messages ADD COLUMN content TEXT;
   CREATE TABLE mentions (
     conversation_id TEXT COLLATE "C" NOT NULL,
     user_id TEXT COLLATE "C" NOT NULL,
     seq BIGINT NOT NULL,
     PRIMARY KEY (conversation_id, user_id, seq)
   );
   CREATE TABLE blocks (
     user_id TEXT COLLATE "C" NOT NULL,
     blocked_id TEXT COLLATE "C" NOT NULL,
     at_ms BIGINT NOT NULL,
     PRIMARY KEY (user_id, blocked_id)
   );
   CREATE TABLE reactions (
     conversation_id TEXT COLLATE "C" NOT NULL,
     seq BIGINT NOT NULL,
     emoji TEXT COLLATE "C" NOT NULL,
     user_id TEXT COLLATE "C" NOT NULL,
     at_ms BIGINT NOT NULL,
     PRIMARY KEY (conversation_id, seq, emoji, user_id)
   );
   CREATE INDEX reactions_in_order ON reactions (conversation_id, seq, emoji, at_ms, user_id);
   CREATE INDEX reactions_by_user ON reactions (conversation_id, seq, user_id);
   CREATE TABLE reaction_counts (
     conversation_id TEXT COLLATE "C" NOT NULL,
     seq BIGINT NOT NULL,
     emoji TEXT COLLATE "C" NOT NULL,
     n INTEGER NOT NULL,
     first_at_ms BIGINT NOT NULL,
     PRIMARY KEY (conversation_id, seq, emoji)
   );
   CREATE TABLE hidden (
     user_id TEXT COLLATE "C" NOT NULL,
     conversation_id TEXT COLLATE "C" NOT NULL,
     seq BIGINT NOT NULL,
     PRIMARY KEY (user_id, conversation_id, seq)
   );
   CREATE INDEX hidden_by_conversation ON hidden (conversation_id, seq);
   CREATE TABLE profiles (
     user_id TEXT COLLATE "C" PRIMARY KEY,
     name TEXT NOT NULL,
     avatar_url TEXT NOT NULL,
     updated_at_ms BIGINT NOT NULL
   );`,
  // Files, search and offline push notifications (postgres-features.ts): uploads and the messages holding them, the
  // full-text index (a tsvector per message, 'simple' configuration: no stemming, any language), push tokens,
  // notification mutes, the bursts waiting to be notified and how far each user was notified in each conversation.
  `CREATE TABLE files (
     id TEXT COLLATE "C" PRIMARY KEY,
     owner_id TEXT COLLATE "C" NOT NULL,
     name TEXT NOT NULL,
     mime TEXT NOT NULL,
     size BIGINT NOT NULL,
     sha256 TEXT NOT NULL,
     width INTEGER NOT NULL,
     height INTEGER NOT NULL,
     has_preview BOOLEAN NOT NULL,
     created_at_ms BIGINT NOT NULL
   );
   CREATE INDEX files_by_owner ON files (owner_id, created_at_ms);
   CREATE TABLE file_refs (
     file_id TEXT COLLATE "C" NOT NULL,
     conversation_id TEXT COLLATE "C" NOT NULL,
     seq BIGINT NOT NULL,
     PRIMARY KEY (file_id, conversation_id, seq)
   );
   CREATE TABLE search_docs (
     conversation_id TEXT COLLATE "C" NOT NULL,
     seq BIGINT NOT NULL,
     tsv TSVECTOR NOT NULL,
     PRIMARY KEY (conversation_id, seq)
   );
   CREATE INDEX search_docs_tsv ON search_docs USING GIN (tsv);
   CREATE TABLE push_devices (
     user_id TEXT COLLATE "C" NOT NULL,
     device_id TEXT COLLATE "C" NOT NULL,
     platform TEXT NOT NULL,
     token TEXT NOT NULL,
     updated_at_ms BIGINT NOT NULL,
     PRIMARY KEY (user_id, device_id)
   );
   CREATE INDEX push_devices_by_token ON push_devices (token);
   CREATE TABLE notify_mutes (
     conversation_id TEXT COLLATE "C" NOT NULL,
     user_id TEXT COLLATE "C" NOT NULL,
     PRIMARY KEY (conversation_id, user_id)
   );
   CREATE TABLE notify_marks (
     user_id TEXT COLLATE "C" NOT NULL,
     conversation_id TEXT COLLATE "C" NOT NULL,
     notified_seq BIGINT NOT NULL,
     PRIMARY KEY (user_id, conversation_id)
   );
   CREATE TABLE notify_pending (
     user_id TEXT COLLATE "C" NOT NULL,
     conversation_id TEXT COLLATE "C" NOT NULL,
     first_seq BIGINT NOT NULL,
     last_seq BIGINT NOT NULL,
     count INTEGER NOT NULL,
     from_user TEXT NOT NULL,
     due_at_ms BIGINT NOT NULL,
     claimed_until_ms BIGINT NOT NULL DEFAULT 0,
     PRIMARY KEY (user_id, conversation_id)
   );
   CREATE INDEX notify_pending_due ON notify_pending (due_at_ms);`,
];


/** pg_advisory_xact_lock(MIGRATION_LOCK, hashtext(schema)): one migrator per schema at a time. */
const MIGRATION_LOCK = 0x4c4c4d47; // 'LLMG'
/** pg_try_advisory_xact_lock(RETENTION_LOCK, hashtext(schema)): one retention batch per schema at a time (any node). */
const RETENTION_LOCK = 0x4c4c5254; // 'LLRT'

const INT8_OID = 20;
/** BIGINT (seqs, millisecond times, counts) as JS numbers: all stay far below 2^53. */
function parseInt8(value: string): number {
  return Number(value);
}
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseInt8 : pg.types.getTypeParser(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * The start of a transaction that stores messages with these idempotency
 * keys: BEGIN, then a transaction lock on each key (in one order: no
 * deadlock), sent together (one round trip). Keys are unique per partition
 * only (an index cannot span them): a concurrent batch with one of them
 * waits here for this one to commit, then finds the key stored (step 1 of
 * append reads in a statement of its own, whose snapshot is taken after the
 * wait). A lock number is 64 bits of the key's SHA-256 (one lock space for
 * the whole database: another schema's key may share one, and only waits).
 */
function beginWithKeys(keys: readonly { fromUser: string; clientMsgId: string }[]): string {
  const locks = new Set<bigint>();
  for (const k of keys) {
    if (k.clientMsgId === '') continue;
    locks.add(createHash('sha256').update(`${k.fromUser.length}:${k.fromUser}${k.clientMsgId}`).digest().readBigInt64BE(0));
  }
  if (locks.size === 0) return 'BEGIN';
  const sorted = [...locks].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return `BEGIN; SELECT pg_advisory_xact_lock(k) FROM unnest('{${sorted.join(',')}}'::int8[]) AS k`;
}

/** Retries of an append that lost a race on an idempotency key (or, defensively, a deadlock). */
const MAX_ATTEMPTS = 5;

// A member who left sees activity only up to its leaving.
const LIST_SELECT = `SELECT c.id, c.kind, c.last_seq, c.retained_from_seq, m.joined_seq, m.left_seq, m.read_seq,
    least(c.last_seq, coalesce(m.left_seq, c.last_seq)) AS visible_seq,
    EXISTS (SELECT 1 FROM member_windows w WHERE w.conversation_id = m.conversation_id AND w.user_id = m.user_id) AS rejoined,
    CASE WHEN m.left_seq IS NULL THEN c.last_at_ms
         ELSE coalesce((SELECT x.sent_at_ms FROM messages x WHERE x.conversation_id = c.id AND x.seq = m.left_seq), c.last_at_ms)
    END AS at_ms
  FROM members m JOIN conversations c ON c.id = m.conversation_id`;

interface StateRow extends StateColumns {
  at_ms: number;
  rejoined: boolean;
  retained_from_seq: number;
}

function stateOf(r: StateRow): ConversationState {
  const c = toState(r, r.at_ms, r.rejoined);
  if (r.retained_from_seq > 1) c.retainedFromSeq = r.retained_from_seq;
  return c;
}

/** A row of a sync's scan (SYNC_COLUMNS). */
interface SyncRow extends StateColumns {
  id: string;
  retained_from_seq: number;
  change_no: number;
  rejoined: boolean;
  from_seq: number;
  named: boolean;
  content: boolean;
}

function syncConversationOf(r: SyncRow): SyncConversation {
  const { lastAtMs: _, ...state } = toState(r, 0, r.rejoined);
  const c: SyncConversation = { ...state, from: Number(r.from_seq), named: r.named, changeNo: Number(r.change_no) };
  if (r.retained_from_seq > 1) c.retainedFromSeq = r.retained_from_seq;
  return c;
}

/** The request's cursors as the JSON object the sync statements read ($3). */
function cursorsJson(cursors: ReadonlyMap<string, number>): string {
  return JSON.stringify(Object.fromEntries(cursors));
}

/** The head of the table as retention reads it, in storage order (see expireBefore). */
interface HeadRow {
  id: number;
  conversation_id: string;
  seq: number;
  sent_at_ms: number;
}

interface MemberRow {
  role: string;
  muted: boolean;
  joined_seq: number;
  left_seq: number | null;
  read_seq: number;
}

const MESSAGE_COLUMNS = 'conversation_id, seq, server_msg_id, from_user, from_device, client_msg_id, text, sent_at_ms, event, recalled_by, content';
/** A membership's change number (store.ts, "Sync"): the writing transaction's id, the same for every row it changes. */
const CHANGE_NO = 'pg_current_xact_id()::text::int8';
/**
 * Member rows are locked in one order, (conversation_id, user_id), by every
 * statement that writes several of them without holding their conversations'
 * row locks (acks, copies of marks) or with them (appends, retention): so two
 * such statements cannot deadlock, whatever order their input lists rows in.
 * (An UPDATE locks rows in the order its plan meets them; a SELECT's locking
 * clause, above its sort, locks them in its ORDER BY.) A transaction that
 * writes member rows in several statements takes them all first
 * (lockMembers), but for group effects (joins, leaves, roles: rare), which
 * write their group's rows under its row lock, before: one can still
 * deadlock with a copy of read marks in that group at that moment, which
 * PostgreSQL detects; both are retried (transaction()). The tail of a SELECT
 * of `members m`.
 */
const LOCK_MEMBERS = 'ORDER BY m.conversation_id, m.user_id FOR NO KEY UPDATE OF m';
/**
 * Below every change number still to commit: the oldest transaction running
 * when the statement's snapshot was taken (every one older has ended, and
 * is seen by that snapshot).
 */
const CHANGE_HORIZON = 'pg_snapshot_xmin(pg_current_snapshot())::text::int8';

// A full sync's rows (store.ts, "Sync"): the user's memberships with the device's cursor, $1 user, $2 device,
// $3 the request's cursors as one JSON object (looked up per row); `delivered`: the parameter saying whether the
// device's delivered cursors stand in for the cursors the request does not give (a client that keeps none of its own).
const SYNC_COLUMNS = `SELECT m.conversation_id AS id, c.kind, c.last_seq, c.retained_from_seq, m.joined_seq, m.left_seq, m.read_seq, m.change_no,
    EXISTS (SELECT 1 FROM member_windows w WHERE w.conversation_id = m.conversation_id AND w.user_id = m.user_id) AS rejoined,
    coalesce(g.given, d.delivered_seq, 0) AS from_seq, g.given IS NOT NULL AS named`;
// (Each membership row found looks its conversation up by key: OFFSET 0 keeps the planner from joining the whole
// table, a hash join it may prefer when it thinks the user has many rows, while the scan stops at its LIMIT.)
const syncFrom = (delivered: string) => `FROM members m
    JOIN LATERAL (SELECT * FROM conversations x WHERE x.id = m.conversation_id OFFSET 0) c ON true
    LEFT JOIN device_cursors d ON ${delivered}::bool AND d.user_id = m.user_id AND d.device_id = $2 AND d.conversation_id = m.conversation_id
    CROSS JOIN LATERAL (SELECT ($3::jsonb ->> m.conversation_id::text)::int8 AS given) g`;
/** Something past the device's cursor that this member may see and is held. */
const SYNC_CONTENT = `least(c.last_seq, coalesce(m.left_seq, c.last_seq))
    > greatest(coalesce(g.given, d.delivered_seq, 0), m.joined_seq - 1, c.retained_from_seq - 1)`;
const NO_LIMIT = Number.MAX_SAFE_INTEGER;

// Named statements: each connection parses and plans them once.
const SQL = {
  byClientIds: `SELECT ${MESSAGE_COLUMNS.split(', ').map((c) => `m.${c}`).join(', ')}
    FROM unnest($1::text[], $2::text[]) AS k(from_user, client_msg_id)
    JOIN messages m ON m.from_user = k.from_user AND m.client_msg_id = k.client_msg_id
    WHERE m.client_msg_id <> ''`,
  // What decides whether each (conversation, user) may send now.
  senderStates: `SELECT u.conversation_id, u.user_id, m.left_seq, m.muted, m.role, g.muted_all, g.dismissed
    FROM unnest($1::text[], $2::text[]) AS u(conversation_id, user_id)
    LEFT JOIN members m ON m.conversation_id = u.conversation_id AND m.user_id = u.user_id
    LEFT JOIN groups g ON g.id = substr(u.conversation_id, 3)`,
  // One row per conversation, in id order (the order rows are locked in). \`due\`: its member rows are to be written
  // (appendBatch: its members_change_no was 0 or not within the slack $5 of this transaction's; now it is this one).
  bumpConversations: `INSERT INTO conversations AS c (id, kind, last_seq, last_at_ms, members_change_no)
    SELECT id, kind, k, at_ms, ${CHANGE_NO} FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u(id, kind, k, at_ms)
    ORDER BY id COLLATE "C"
    ON CONFLICT (id) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq, last_at_ms = greatest(c.last_at_ms, excluded.last_at_ms),
      members_change_no = CASE WHEN c.members_change_no < ${CHANGE_NO} - $5 OR c.members_change_no = 0 THEN ${CHANGE_NO} ELSE c.members_change_no END
    RETURNING c.id, c.last_seq, (c.xmax = 0) AS created, c.members_change_no = ${CHANGE_NO} AS due`,
  addMembers: `INSERT INTO members (user_id, conversation_id, joined_at_ms)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
    ON CONFLICT DO NOTHING`,
  insertMessages: `INSERT INTO messages (conversation_id, seq, server_msg_id, from_user, from_device, client_msg_id, text, sent_at_ms, event, content)
    SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::text[], $10::text[])`,
  insertMentions: `INSERT INTO mentions (conversation_id, user_id, seq) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) ON CONFLICT DO NOTHING`,
  clearMentions: `DELETE FROM mentions WHERE conversation_id = $1 AND seq = $2`,
  clearMentionsFrom: `DELETE FROM mentions WHERE conversation_id = $1 AND seq >= $2`,
  // An append's member rows (store.ts, "Sync"; see appendBatch), locked in member order (LOCK_MEMBERS) as the statement
  // finds them: the writers' read cursors ($3: the seq of a writer's last message, 0 for a member who did not write),
  // and the change index where $4 says so.
  touchMembers: `WITH l AS MATERIALIZED (SELECT m.conversation_id, m.user_id, u.seq, u.change
      FROM unnest($1::text[], $2::text[], $3::int8[], $4::bool[]) AS u(conversation_id, user_id, seq, change)
      JOIN members m ON m.conversation_id = u.conversation_id AND m.user_id = u.user_id
      ${LOCK_MEMBERS})
    UPDATE members m SET read_seq = greatest(m.read_seq, l.seq), wrote = m.wrote OR l.seq > 0,
      change_no = CASE WHEN l.change THEN ${CHANGE_NO} ELSE m.change_no END
    FROM l WHERE m.conversation_id = l.conversation_id AND m.user_id = l.user_id`,
  // The members of these groups ($1) who may see a seq from the first one on ($2; those who left before it may not):
  // those whose rows an append writes for the change index (appendBatch), or a copy locks (replicate).
  watchers: `SELECT m.conversation_id, m.user_id FROM unnest($1::text[], $2::int8[]) AS u(conversation_id, first_seq)
    JOIN conversations c ON c.id = u.conversation_id AND c.fanout
    JOIN members m ON m.conversation_id = u.conversation_id AND (m.left_seq IS NULL OR m.left_seq >= u.first_seq)`,
  // Member rows locked (in member order) before a transaction's statements write them one set after another.
  lockMembers: `SELECT 1 FROM members m
    JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS x(conversation_id, user_id)) u
      ON m.conversation_id = u.conversation_id AND m.user_id = u.user_id
    ${LOCK_MEMBERS}`,
  // A rejoin first keeps the window that ended (see pastWindows).
  keepWindows: `INSERT INTO member_windows (conversation_id, user_id, joined_seq, left_seq)
    SELECT conversation_id, user_id, joined_seq, left_seq FROM members
    WHERE conversation_id = $1 AND user_id = ANY($2::text[]) AND left_seq IS NOT NULL AND left_seq >= joined_seq
    ON CONFLICT DO NOTHING`,
  pastWindows: `SELECT * FROM (SELECT joined_seq, left_seq FROM member_windows WHERE conversation_id = $1 AND user_id = $2
    ORDER BY joined_seq DESC LIMIT ${PAST_WINDOWS_MAX}) w ORDER BY joined_seq`,
  joinMembers: `INSERT INTO members (user_id, conversation_id, joined_at_ms, role, joined_seq, left_seq, read_seq, muted, change_no)
    SELECT u.user_id, $4, $5, u.role, $6, NULL, u.read_seq, false,
      CASE WHEN (SELECT fanout FROM conversations WHERE id = $4) THEN ${CHANGE_NO} ELSE ${CHANGE_ALWAYS} END
    FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(user_id, role, read_seq)
    ORDER BY u.user_id COLLATE "C"
    ON CONFLICT (user_id, conversation_id) DO UPDATE SET
      role = excluded.role, joined_seq = excluded.joined_seq, left_seq = NULL, muted = false,
      joined_at_ms = excluded.joined_at_ms, read_seq = greatest(members.read_seq, excluded.read_seq),
      wrote = CASE WHEN members.left_seq IS NULL THEN members.wrote ELSE false END, change_no = excluded.change_no`,
  // A member who leaves has its leaving to read (its row changes, whatever the group's size).
  leaveMembers: `UPDATE members SET left_seq = $1, change_no = ${CHANGE_NO} WHERE conversation_id = $2 AND user_id = ANY($3::text[]) AND left_seq IS NULL`,
  leaveAll: `UPDATE members SET left_seq = $1, change_no = ${CHANGE_NO} WHERE conversation_id = $2 AND left_seq IS NULL`,
  // The members who may see a seq from the first one on ($2; those who left before it may not) have something to
  // read, unless their row's change number is within the slack ($3) of this transaction's. Groups too large for
  // that (fanout false) keep CHANGE_ALWAYS on their members' rows instead. Rows locked in member order.
  bumpChanges: `WITH l AS MATERIALIZED (SELECT m.conversation_id, m.user_id FROM unnest($1::text[], $2::int8[]) AS u(conversation_id, first_seq)
      JOIN conversations c ON c.id = u.conversation_id AND c.fanout
      JOIN members m ON m.conversation_id = u.conversation_id AND (m.left_seq IS NULL OR m.left_seq >= u.first_seq)
      WHERE m.change_no < ${CHANGE_NO} - $3
      ${LOCK_MEMBERS})
    UPDATE members m SET change_no = ${CHANGE_NO} FROM l
    WHERE m.conversation_id = l.conversation_id AND m.user_id = l.user_id AND m.change_no < ${CHANGE_NO} - $3`,
  // A member who joins gets a change number this transaction's: the conversation's members_change_no stays at or below
  // every member row's.
  joinedChange: `UPDATE conversations SET members_change_no = ${CHANGE_NO} WHERE id = $1 AND members_change_no > ${CHANGE_NO}`,
  // A group that grew past CHANGE_FANOUT_MAX current members: its members' rows are read at every sync from now on.
  markBig: `UPDATE conversations SET fanout = false WHERE id = $1 AND fanout
    AND (SELECT count(*) FROM members WHERE conversation_id = $1 AND left_seq IS NULL) > ${CHANGE_FANOUT_MAX} RETURNING id`,
  bigMembers: `UPDATE members SET change_no = ${CHANGE_ALWAYS} WHERE conversation_id = $1 AND left_seq IS NULL`,
  // The horizon (the oldest transaction running, held back by the slack $7: store.ts, "Sync"), and in the same snapshot,
  // from the position on ($4, $5), in change order: those named in the request ($3) and those with something past the
  // device's cursor, at most $6 rows (limit + 1 + the number named: at least limit + 1 of the latter when there are).
  // One row with a null id when there is none.
  syncScan: `SELECT h.horizon, s.* FROM (SELECT greatest(0, ${CHANGE_HORIZON} - $7) AS horizon) h
    LEFT JOIN LATERAL (${SYNC_COLUMNS}, ${SYNC_CONTENT} AS content ${syncFrom('$8')}
      WHERE m.user_id = $1 AND (m.change_no, m.conversation_id) >= ($4::int8, $5::text) AND (g.given IS NOT NULL OR ${SYNC_CONTENT})
      ORDER BY m.change_no, m.conversation_id LIMIT $6) s ON true`,
  syncStates: `${SYNC_COLUMNS}, ${SYNC_CONTENT} AS content ${syncFrom('$5')}
    WHERE m.user_id = $1 AND m.conversation_id = ANY($4::text[]) ORDER BY c.last_at_ms DESC, c.id`,
  setRole: `UPDATE members SET role = $1 WHERE conversation_id = $2 AND user_id = $3`,
  setOwner: `UPDATE groups SET owner = $1 WHERE id = $2`,
  muteMember: `UPDATE members SET muted = $1 WHERE conversation_id = $2 AND user_id = $3`,
  createGroup: `INSERT INTO groups (id, name, owner, created_at_ms) VALUES ($1, $2, $3, $4)`,
  muteGroup: `UPDATE groups SET muted_all = $1 WHERE id = $2`,
  dismissGroup: `UPDATE groups SET dismissed = true WHERE id = $1`,
  // Only a message stored by the time the recall is (seq ≤ its own), as when drafts are stored one by one.
  recall: `UPDATE messages SET text = '', content = NULL, recalled_by = $1 WHERE conversation_id = $2 AND seq = $3 AND seq <= $4`,
  // A tombstone: text and content gone, recalled_by names who deleted it (contentJson's deleted mark).
  deleteMessage: `UPDATE messages SET text = '', content = '{"deleted":true}', recalled_by = $1 WHERE conversation_id = $2 AND seq = $3 AND seq <= $4`,
  // A recalled or deleted message is not edited back.
  editMessage: `UPDATE messages SET text = $1, content = $2 WHERE conversation_id = $3 AND seq = $4 AND seq <= $5
    AND recalled_by IS NULL AND event IS NULL RETURNING seq`,
  blocked: `SELECT blocked_id FROM blocks WHERE user_id = $1 ORDER BY blocked_id LIMIT $2`,
  // Blocks one more only while under the limit ($4), one statement (two blocks at once may both pass: the limit is a bound, not exact).
  block: `INSERT INTO blocks (user_id, blocked_id, at_ms) SELECT $1, $2, $3
    WHERE EXISTS (SELECT 1 FROM blocks WHERE user_id = $1 AND blocked_id = $2) OR (SELECT count(*) FROM blocks WHERE user_id = $1) < $4
    ON CONFLICT DO NOTHING`,
  isBlocked: `SELECT 1 FROM blocks WHERE user_id = $1 AND blocked_id = $2`,
  profiles: `SELECT user_id, name, avatar_url, updated_at_ms FROM profiles WHERE user_id = ANY($1::text[])`,
  hide: `INSERT INTO hidden (user_id, conversation_id, seq) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
  hiddenSeqs: `SELECT seq FROM hidden WHERE user_id = $1 AND conversation_id = $2 AND seq = ANY($3::int8[])`,
  putProfile: `INSERT INTO profiles (user_id, name, avatar_url, updated_at_ms) VALUES ($1, $2, $3, $4)
    ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, avatar_url = excluded.avatar_url, updated_at_ms = excluded.updated_at_ms`,
  // A message's counts are locked first: the reactions to one message are written one at a time.
  lockReactionCounts: `SELECT emoji FROM reaction_counts WHERE conversation_id = $1 AND seq = $2 ORDER BY emoji FOR UPDATE`,
  hasReaction: `SELECT 1 FROM reactions WHERE conversation_id = $1 AND seq = $2 AND emoji = $3 AND user_id = $4`,
  userReactionCount: `SELECT count(*) AS n FROM reactions WHERE conversation_id = $1 AND seq = $2 AND user_id = $3`,
  addReaction: `INSERT INTO reactions (conversation_id, seq, emoji, user_id, at_ms) VALUES ($1, $2, $3, $4, $5)`,
  countUp: `INSERT INTO reaction_counts AS c (conversation_id, seq, emoji, n, first_at_ms) VALUES ($1, $2, $3, 1, $4)
    ON CONFLICT (conversation_id, seq, emoji) DO UPDATE SET n = c.n + 1`,
  removeReaction: `DELETE FROM reactions WHERE conversation_id = $1 AND seq = $2 AND emoji = $3 AND user_id = $4`,
  countDown: `UPDATE reaction_counts SET n = n - 1 WHERE conversation_id = $1 AND seq = $2 AND emoji = $3`,
  dropEmptyCount: `DELETE FROM reaction_counts WHERE conversation_id = $1 AND seq = $2 AND emoji = $3 AND n <= 0`,
  // Each message's counts, emojis in the order first used, with the first $3 users of each (one index range read per emoji).
  reactions: `SELECT c.seq, c.emoji, c.n, coalesce(u.users, '{}') AS users FROM reaction_counts c
    LEFT JOIN LATERAL (SELECT array_agg(x.user_id ORDER BY x.at_ms, x.user_id) AS users FROM (SELECT r.user_id, r.at_ms FROM reactions r
      WHERE r.conversation_id = c.conversation_id AND r.seq = c.seq AND r.emoji = c.emoji ORDER BY r.at_ms, r.user_id LIMIT $3) x) u ON true
    WHERE c.conversation_id = $1 AND c.seq = ANY($2::int8[]) ORDER BY c.seq, c.first_at_ms, c.emoji`,
  clearReactions: `DELETE FROM reactions WHERE conversation_id = $1 AND seq >= $2 AND seq < $3`,
  clearReactionCounts: `DELETE FROM reaction_counts WHERE conversation_id = $1 AND seq >= $2 AND seq < $3`,
  clearHidden: `DELETE FROM hidden WHERE conversation_id = $1 AND seq >= $2`,
  unblock: `DELETE FROM blocks WHERE user_id = $1 AND blocked_id = $2`,
  blockersOf: `SELECT user_id FROM blocks WHERE blocked_id = $1 AND user_id = ANY($2::text[])`,
  heads: `SELECT id, last_seq, home_dc FROM conversations WHERE id = ANY($1::text[])`,
  dcHomes: `SELECT dc, served_by, epoch, state, changed_at_ms FROM dc_homes`,
  putDcHome: `INSERT INTO dc_homes AS h (dc, served_by, epoch, state, changed_at_ms) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (dc) DO UPDATE SET served_by = excluded.served_by, epoch = excluded.epoch, state = excluded.state, changed_at_ms = excluded.changed_at_ms
    WHERE h.epoch < excluded.epoch`,
  dcHome: `SELECT served_by, epoch, state, changed_at_ms FROM dc_homes WHERE dc = $1`,
  // An append under the homes' records as they are (shared locks, in dc order; a record being put holds it exclusively).
  // (Then read in a statement of its own: read committed takes its snapshot at the statement's start, after the wait.)
  homesShared: `SELECT pg_advisory_xact_lock_shared($2::int, hashtext(d)) FROM unnest($1::text[]) AS d ORDER BY d`,
  homeEpochs: `SELECT dc, epoch FROM dc_homes WHERE dc = ANY($1::text[])`,
  homesExclusive: `SELECT pg_advisory_xact_lock($2::int, hashtext($1))`,
  changedSince: `SELECT id, last_seq, home_dc, last_at_ms FROM conversations WHERE last_at_ms >= $1 ORDER BY last_at_ms, id LIMIT $2`,
  readsSince: `SELECT conversation_id, user_id, read_seq, read_at_ms FROM members WHERE read_at_ms >= $1 AND read_at_ms > 0 AND read_at_ms <= $3 ORDER BY read_at_ms LIMIT $2`,
  cursorsSince: `SELECT user_id, device_id, conversation_id, delivered_seq, at_ms FROM device_cursors WHERE at_ms >= $1 AND at_ms > 0 AND at_ms <= $3 ORDER BY at_ms LIMIT $2`,
  revocationsSince: `SELECT user_id, device_id, before_ms, at_ms FROM revocations WHERE at_ms >= $1 AND at_ms > 0 AND at_ms <= $3 ORDER BY at_ms LIMIT $2`,
  // Copies from another datacenter: forward only, not stamped (at_ms stays as it was here, 0 for a new row).
  mergeReads: `UPDATE members m SET read_seq = u.seq
    FROM (SELECT conversation_id, user_id, max(seq) AS seq FROM unnest($1::text[], $2::text[], $3::int8[]) AS x(conversation_id, user_id, seq)
      GROUP BY conversation_id, user_id) u
    WHERE m.conversation_id = u.conversation_id AND m.user_id = u.user_id AND m.read_seq < u.seq
    RETURNING m.conversation_id, m.user_id, m.read_seq`,
  mergeCursors: `INSERT INTO device_cursors (user_id, device_id, conversation_id, delivered_seq)
    SELECT u.user_id, u.device_id, u.conversation_id, u.seq
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) AS u(user_id, device_id, conversation_id, seq)
    JOIN conversations c ON c.id = u.conversation_id
    ORDER BY u.user_id COLLATE "C", u.device_id COLLATE "C", u.conversation_id COLLATE "C"
    ON CONFLICT (user_id, device_id, conversation_id)
    DO UPDATE SET delivered_seq = greatest(device_cursors.delivered_seq, excluded.delivered_seq)`,
  mergeDeliveredMarks: `UPDATE members m SET delivered_seq = u.seq
    FROM (SELECT conversation_id, user_id, max(seq) AS seq FROM unnest($1::text[], $2::text[], $3::int8[]) AS x(user_id, conversation_id, seq)
      GROUP BY conversation_id, user_id) u
    WHERE m.conversation_id = u.conversation_id AND m.user_id = u.user_id AND m.delivered_seq < u.seq`,
  mergeRevocations: `INSERT INTO revocations (user_id, device_id, before_ms, at_ms)
    SELECT u.user_id, u.device_id, u.before_ms, 0 FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(user_id, device_id, before_ms)
    ORDER BY u.user_id COLLATE "C", u.device_id COLLATE "C"
    ON CONFLICT (user_id, device_id) DO UPDATE SET before_ms = greatest(revocations.before_ms, excluded.before_ms)`,
  putRevocation: `INSERT INTO revocations (user_id, device_id, before_ms, at_ms) VALUES ($1, $2, $3, ${NOW_MS})
    ON CONFLICT (user_id, device_id) DO UPDATE SET before_ms = greatest(revocations.before_ms, excluded.before_ms), at_ms = excluded.at_ms`,
  membersHeld: `SELECT m.conversation_id, m.user_id FROM members m
    JOIN unnest($1::text[], $2::text[]) AS u(conversation_id, user_id) ON m.conversation_id = u.conversation_id AND m.user_id = u.user_id`,
  conversationsHeld: `SELECT id FROM conversations WHERE id = ANY($1::text[])`,
  dcState: `SELECT value FROM dc_state WHERE key = $1`,
  nowMs: `SELECT ${NOW_MS} AS now`,
  putDcState: `INSERT INTO dc_state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
  orphan: `WITH gone AS (DELETE FROM messages WHERE conversation_id = $1 AND seq >= $2 RETURNING ${MESSAGE_COLUMNS})
    INSERT INTO orphaned_messages (orphaned_at_ms, ${MESSAGE_COLUMNS}) SELECT $3, ${MESSAGE_COLUMNS} FROM gone`,
  rewindHead: `UPDATE conversations SET last_seq = least(last_seq, $2) WHERE id = $1`,
  // A copy's idempotency key held here by another row (this datacenter's own, never copied: a tail a takeover
  // left behind) goes to the orphans: the home's copy is the one.
  orphanKey: `WITH gone AS (DELETE FROM messages WHERE from_user = $1 AND client_msg_id = $2 AND client_msg_id <> ''
      AND NOT (conversation_id = $3 AND seq = $4) RETURNING ${MESSAGE_COLUMNS})
    INSERT INTO orphaned_messages (orphaned_at_ms, ${MESSAGE_COLUMNS}) SELECT $5, ${MESSAGE_COLUMNS} FROM gone`,
  // A copy takes its conversation's row lock first (creating the row if missing: RETURNING says so; a row there
  // already is locked, not changed), as an append does: (conversation_id, seq) is unique per partition only, so
  // whether the seq is held is read under that lock, then the message stored at its own seq if it is not.
  replicaConversation: `INSERT INTO conversations AS c (id, kind, last_seq, last_at_ms, home_dc) VALUES ($1, $2, 0, 0, $3)
    ON CONFLICT (id) DO UPDATE SET last_seq = c.last_seq WHERE false
    RETURNING true AS created`,
  replicaMessage: `INSERT INTO messages (${MESSAGE_COLUMNS})
    SELECT $1::text, $2::int8, $3::text, $4::text, $5::text, $6::text, $7::text, $8::int8, $9::text, $10::text, $11::text
    WHERE NOT EXISTS (SELECT 1 FROM messages WHERE conversation_id = $1::text AND seq = $2::int8)
    RETURNING seq`,
  replicaHead: `UPDATE conversations SET last_seq = greatest(last_seq, $2), last_at_ms = greatest(last_at_ms, $3) WHERE id = $1`,
  after: `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4`,
  // Never below the conversation's floor (retention raises it before it drops a partition: see expireByPartition).
  before: `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq < $2
    AND seq >= greatest($3, (SELECT retained_from_seq FROM conversations WHERE id = $1)) ORDER BY seq DESC LIMIT $4`,
  one: `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq = $2
    AND seq >= (SELECT retained_from_seq FROM conversations WHERE id = $1)`,
  unread: `SELECT count(*) AS n FROM (SELECT 1 FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq <= $3
    AND from_user <> $4 AND event IS NULL LIMIT $5) x`,
  membersAt: `SELECT user_id FROM members WHERE conversation_id = $1 AND joined_seq <= $2 AND (left_seq IS NULL OR left_seq > $2) ORDER BY user_id`,
  largeGroups: `SELECT id FROM conversations WHERE id = ANY($1::text[]) AND NOT fanout`,
  lastSeq: `SELECT last_seq FROM conversations WHERE id = $1`,
  memberWindows: `SELECT user_id, joined_seq, left_seq FROM members WHERE conversation_id = $1 AND (left_seq IS NULL OR left_seq > $2)`,
  writersTo: `SELECT w.user_id FROM unnest($2::text[]) AS w(user_id) WHERE EXISTS (
      SELECT 1 FROM members a JOIN members b ON b.user_id = $1 AND b.conversation_id = a.conversation_id AND b.left_seq IS NULL
      WHERE a.user_id = w.user_id AND a.wrote AND a.left_seq IS NULL)`,
  groupCounts: `SELECT user_id, count(*) AS n FROM members WHERE user_id = ANY($1::text[])
    AND conversation_id >= 'g:' AND conversation_id < 'g;' AND left_seq IS NULL GROUP BY user_id`,
  members: `SELECT user_id FROM members WHERE conversation_id = $1 AND left_seq IS NULL ORDER BY user_id`,
  membership: `SELECT role, muted, joined_seq, left_seq, read_seq FROM members WHERE conversation_id = $1 AND user_id = $2`,
  memberships: `SELECT user_id, role, muted, joined_seq, left_seq, read_seq FROM members WHERE conversation_id = $1 AND user_id = ANY($2::text[])`,
  groupRow: `SELECT id, name, owner, muted_all, dismissed, created_at_ms FROM groups WHERE id = $1`,
  groupMembers: `SELECT user_id, role, muted, read_seq FROM members WHERE conversation_id = $1 AND left_seq IS NULL
    ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, user_id`,
  readCursors: `SELECT user_id, read_seq FROM members WHERE conversation_id = $1 AND left_seq IS NULL`,
  // A member who left sees activity only up to its leaving.
  listForUser: `${LIST_SELECT} WHERE m.user_id = $1 ORDER BY at_ms DESC, c.id`,
  // One page of that list (resumed after (at_ms, id)) with each row's summary, in one statement:
  // the last visible message (text cut to $5 characters), unread (counted up to $6), the peer's read mark, the group's name.
  conversationPage: `SELECT p.*,
      last.seq AS last_msg_seq, last.server_msg_id, last.from_user, last.from_device, last.client_msg_id,
      left(last.text, $5) AS last_text, length(last.text) AS last_length, last.sent_at_ms, last.event, last.recalled_by, last.content,
      EXISTS (SELECT 1 FROM mentions n WHERE n.conversation_id = p.id AND n.user_id IN ($1, '*')
         AND n.seq > greatest(p.read_seq, p.joined_seq - 1, p.retained_from_seq - 1) AND n.seq <= p.visible_seq) AS mentioned,
      (SELECT count(*) FROM (SELECT 1 FROM messages u WHERE u.conversation_id = p.id
         AND u.seq > greatest(p.read_seq, p.joined_seq - 1, p.retained_from_seq - 1) AND u.seq <= p.visible_seq
         AND u.from_user <> $1 AND u.event IS NULL LIMIT $6) x) AS unread,
      peer.read_seq AS peer_read_seq, peer.delivered_seq AS peer_delivered_seq, g.name AS group_name
    FROM (
      SELECT * FROM (${LIST_SELECT} WHERE m.user_id = $1) l
      WHERE l.at_ms < $2 OR (l.at_ms = $2 AND l.id > $3) ORDER BY l.at_ms DESC, l.id LIMIT $4
    ) p
    LEFT JOIN LATERAL (SELECT * FROM messages x WHERE x.conversation_id = p.id AND x.seq <= p.visible_seq
      AND x.seq >= greatest(p.joined_seq, p.retained_from_seq) ORDER BY x.seq DESC LIMIT 1) last ON true
    LEFT JOIN LATERAL (SELECT y.read_seq, y.delivered_seq FROM members y WHERE p.kind = 'direct' AND y.conversation_id = p.id
      ORDER BY y.user_id = $1 LIMIT 1) peer ON true
    LEFT JOIN groups g ON p.kind = 'group' AND g.id = substr(p.id, 3)
    ORDER BY p.at_ms DESC, p.id`,
  markRead: `UPDATE members SET read_seq = greatest(read_seq, $1), read_at_ms = CASE WHEN $1 > read_seq THEN ${NOW_MS} ELSE read_at_ms END
    WHERE conversation_id = $2 AND user_id = $3 RETURNING read_seq`,
  // A cursor never passes the conversation's last seq (a bogus ack must not skip future
  // messages) and is not kept for a conversation that does not exist. Rows in key order.
  advance: `INSERT INTO device_cursors (user_id, device_id, conversation_id, delivered_seq, at_ms)
    SELECT u.user_id, u.device_id, u.conversation_id, least(u.seq, c.last_seq), ${NOW_MS}
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) AS u(user_id, device_id, conversation_id, seq)
    JOIN conversations c ON c.id = u.conversation_id
    ORDER BY u.user_id COLLATE "C", u.device_id COLLATE "C", u.conversation_id COLLATE "C"
    ON CONFLICT (user_id, device_id, conversation_id)
    DO UPDATE SET delivered_seq = greatest(device_cursors.delivered_seq, excluded.delivered_seq),
      at_ms = CASE WHEN excluded.delivered_seq > device_cursors.delivered_seq THEN excluded.at_ms ELSE device_cursors.at_ms END`,
  // The 1:1 delivered marks those cursors move (one row per user and conversation, highest seq first
  // in the batch; locked in member order), each saying whether it moved past a message of the other member
  // (\`was\`: the mark before). (A conversation's acks are handled by the node owning its partition, so two
  // of these do not race for the same rows.)
  advanceMarks: `WITH o AS MATERIALIZED (SELECT m.conversation_id, m.user_id, m.delivered_seq AS was, least(u.seq, c.last_seq) AS seq
      FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(user_id, conversation_id, seq)
      JOIN conversations c ON c.id = u.conversation_id
      JOIN members m ON m.conversation_id = u.conversation_id AND m.user_id = u.user_id
      WHERE m.delivered_seq < least(u.seq, c.last_seq)
      ${LOCK_MEMBERS})
    UPDATE members m SET delivered_seq = o.seq FROM o
    WHERE m.conversation_id = o.conversation_id AND m.user_id = o.user_id AND m.delivered_seq < o.seq
    RETURNING m.user_id, m.conversation_id, m.delivered_seq, EXISTS (SELECT 1 FROM messages x WHERE x.conversation_id = m.conversation_id
      AND x.seq > o.was AND x.seq <= m.delivered_seq AND x.from_user <> m.user_id) AS past_peer`,
  delivered: `SELECT conversation_id, delivered_seq FROM device_cursors WHERE user_id = $1 AND device_id = $2`,
  // A new owner's first write: the next epoch, the row locked to commit (a check of the old owner waits,
  // then fails). Only with a newer proof of the lease than the current owner's (no row back otherwise).
  takeShards: `INSERT INTO shard_fences AS f (shard, epoch, owner, held_at)
    SELECT s, 1, $2, h FROM unnest($1::int[], $3::int8[]) AS u(s, h) ORDER BY s
    ON CONFLICT (shard) DO UPDATE SET epoch = f.epoch + 1, owner = excluded.owner, held_at = excluded.held_at, taken_at = now()
      WHERE f.held_at < excluded.held_at
    RETURNING f.shard, f.epoch`,
  // Held to commit: a taker's bump waits until this write committed or rolled back.
  checkShards: `SELECT shard, epoch FROM shard_fences WHERE shard = ANY($1::int[]) ORDER BY shard FOR SHARE`,
  // Retention (see expireBefore): one batch at a time per schema, whichever node asks; the others skip.
  retentionLock: `SELECT pg_try_advisory_xact_lock(${RETENTION_LOCK}, hashtext(current_schema())) AS locked`,
  // The oldest stored rows, in storage order (the identity only grows; within a conversation it is seq order).
  head: `SELECT id, conversation_id, seq, sent_at_ms FROM messages WHERE id < $2 ORDER BY id LIMIT $1`,
  // Conversations locked in id order before any of their messages, as append locks them: no deadlock with a
  // batch that holds one and touches a message (a recall).
  lockConversations: `SELECT id FROM conversations WHERE id = ANY($1::text[]) ORDER BY id COLLATE "C" FOR NO KEY UPDATE`,
  expire: `DELETE FROM messages WHERE id = ANY($1::int8[])`,
  raiseFloors: `UPDATE conversations c SET retained_from_seq = greatest(c.retained_from_seq, u.seq)
    FROM unnest($1::text[], $2::int8[]) AS u(id, seq) WHERE c.id = u.id`,
  // Partitions (see "Partitions" at the top, and expireByPartition). `pending`: null when the table is not attached.
  partitions: `SELECT p.part, p.lower_id, p.upper_id, p.opened_at_ms, p.closed_xmax, p.floors_after, p.floors_done, p.by_rows,
      to_regclass('messages_' || p.part) IS NOT NULL AS present, i.inhdetachpending AS pending
    FROM message_partitions p
    LEFT JOIN pg_inherits i ON i.inhrelid = to_regclass('messages_' || p.part) AND i.inhparent = to_regclass('messages')
    ORDER BY p.part`,
  // The next message id, now on the database's clock, and the horizon (every transaction below it has ended).
  partitionClock: `SELECT ${NOW_MS} AS now, ${CHANGE_HORIZON} AS horizon,
      (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM messages_id_seq) AS next_id`,
  // Ids from $1 on (never back: only when the next one is below it).
  openPartition: `SELECT setval('messages_id_seq', $1, false) FROM messages_id_seq
    WHERE (CASE WHEN is_called THEN last_value + 1 ELSE last_value END) < $1`,
  // Partitions before $1 get no new ids: closed for good once every transaction running now has ended.
  closePartitions: `UPDATE message_partitions SET closed_xmax = pg_snapshot_xmax(pg_current_snapshot())::text::int8
    WHERE part < $1 AND closed_xmax IS NULL`,
  addPartition: `INSERT INTO message_partitions (part, lower_id, upper_id, opened_at_ms) VALUES ($1, $2, $3, ${NOW_MS})`,
  floorsProgress: `UPDATE message_partitions SET floors_after = $2, floors_done = $3 WHERE part = $1`,
  forgetPartition: `DELETE FROM message_partitions WHERE part = $1`,
  // Risk control. The rules row: inserted by the first put, then version + 1 under its row lock (concurrent puts queue).
  riskRules: `SELECT version, document, updated_at_ms FROM risk_rules WHERE id = 1`,
  riskRulesVersion: `SELECT version FROM risk_rules WHERE id = 1`,
  putRiskRules: `INSERT INTO risk_rules AS r (id, version, document, updated_at_ms) VALUES (1, 1, $1, $2)
    ON CONFLICT (id) DO UPDATE SET version = r.version + 1, document = excluded.document, updated_at_ms = excluded.updated_at_ms
    RETURNING r.version`,
  // One statement (atomic); ids drawn in the entries' order.
  appendRiskAudit: `INSERT INTO risk_audit (at_ms, user_id, rule, action, detail)
    SELECT at_ms, user_id, rule, action, detail
    FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(at_ms, user_id, rule, action, detail, n)
    ORDER BY n`,
  riskAudit: `SELECT id, at_ms, user_id, rule, action, detail FROM risk_audit WHERE id < $1 ORDER BY id DESC LIMIT $2`,
  riskAuditByUser: `SELECT id, at_ms, user_id, rule, action, detail FROM risk_audit WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`,
  // Insert-if-missing, then a read in a statement of its own: its snapshot sees a row a concurrent first call
  // committed while the insert waited for it (a CTE reading in the insert's snapshot would not).
  insertSetting: `INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING value`,
  setting: `SELECT value FROM settings WHERE key = $1`,
  // Users in key order, so concurrent calls wait for each other's rows in one order.
  insertFirstSeen: `INSERT INTO risk_first_seen (user_id, first_seen_ms)
    SELECT u, $2 FROM unnest($1::text[]) AS u ORDER BY u COLLATE "C"
    ON CONFLICT (user_id) DO NOTHING`,
  firstSeen: `SELECT user_id, first_seen_ms FROM risk_first_seen WHERE user_id = ANY($1::text[])`,
} as const;
type Statement = keyof typeof SQL;

type Queryable = pg.Pool | pg.PoolClient;

function windowOf(r: { user_id: string; joined_seq: number; left_seq: number | null }): MemberWindow {
  return r.left_seq === null ? { userId: r.user_id, joinedSeq: r.joined_seq } : { userId: r.user_id, joinedSeq: r.joined_seq, leftSeq: r.left_seq };
}

async function run<R extends pg.QueryResultRow>(db: Queryable, name: Statement, values: unknown[]): Promise<R[]> {
  const result = await db.query<R>({ name: `ll_${name}`, text: SQL[name], values });
  return result.rows;
}

/** The draft's idempotency key, or undefined when it has none. */
function keyOf(fromUser: string, clientMsgId: string): string | undefined {
  return clientMsgId === '' ? undefined : `${fromUser.length}:${fromUser}${clientMsgId}`;
}

function placeKey(conversationId: string, seq: number): string {
  return `${seq}:${conversationId}`;
}

/** A member row an append writes (touchMembers): the seq of the writer's last message (0: not a writer), and whether its change number is written. */
interface MemberTouch {
  conversationId: string;
  userId: string;
  seq: number;
  change: boolean;
}

/** (conversation, user) as one string, a member row's key (ids hold no U+0000). */
function memberKey(conversationId: string, userId: string): string {
  return `${conversationId}\u0000${userId}`;
}

/** An append's (or a copy's) member rows written (SQL.touchMembers: locked in member order, whatever the order here). */
async function touchMembers(client: pg.PoolClient, touched: Iterable<MemberTouch>): Promise<void> {
  const rows = [...touched];
  if (rows.length === 0) return;
  await run(client, 'touchMembers', [rows.map((r) => r.conversationId), rows.map((r) => r.userId), rows.map((r) => r.seq), rows.map((r) => r.change)]);
}

/** What append decided for a draft before any seq is known. */
type Plan =
  | { fresh: true; conversation: number; ordinal: number }
  | { fresh: false; source: { row: MessageRow } | { draft: number } };

interface ConversationPlan {
  id: string;
  kind: ConversationKind;
  /** The draft that creates the conversation if it does not exist yet. */
  first: MessageDraft;
  count: number;
  lastAtMs: number;
  firstSeq: number;
  created: boolean;
  /** Its member rows' change numbers are to be written (bumpConversations). */
  due: boolean;
}

function isRetryable(error: unknown): boolean {
  const e = error as { code?: string; constraint?: string };
  if (e.code === '23505' && /^messages_\d+_by_client_id$/.test(e.constraint ?? '')) return true;
  return e.code === '40P01' || e.code === '40001';
}

export class PostgresStore implements Store {
  readonly checksSenders = true;
  private closed = false;

  /** Files, search, push notifications (postgres-features.ts). */
  private readonly features: PostgresFeatures;

  private constructor(
    private readonly pool: pg.Pool,
    /** The change slack (store.ts, "Sync"; PostgresStoreOptions.changeSlack). */
    private readonly slack: number,
  ) {
    this.features = new PostgresFeatures(pool, (work) => this.transaction(work));
  }

  /** Connect, migrate the schema (idempotent, one migrator at a time), and return the store. */
  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const { schema } = options;
    if (schema !== undefined && !/^[a-z_][a-z0-9_]*$/.test(schema)) {
      throw new Error(`schema must be lowercase letters, digits and underscores: ${JSON.stringify(schema)}`);
    }
    // Settings of every connection, sent in its startup packet (no query of their own to race
    // the first one): the schema first on the search_path, transactions left idle ended by the
    // server, and custom plans. A statement's generic plan, cached while the tables were small
    // (a new database), would keep a hash join over a full scan of `messages` as the table
    // grows, until autovacuum analyzes it; planned with the real arrays each time, lookups stay
    // on the indexes. The statements stay named, so each is still parsed once per connection.
    const settings = [...(schema !== undefined ? [`-c search_path="${schema}"`] : []), '-c plan_cache_mode=force_custom_plan'];
    const pool = new pg.Pool({
      connectionString: options.url, max: options.poolSize ?? 10, types: TYPES, options: settings.join(' '),
      idle_in_transaction_session_timeout: Math.max(0, Math.floor(options.idleInTransactionMs ?? 5000)),
      // A dead or stalled server must fail requests, not hang them (a hung batch holds its shard).
      connectionTimeoutMillis: 10_000, keepAlive: true, statement_timeout: 30_000, query_timeout: 35_000,
    });
    // An idle connection that breaks (a server restart) is dropped by the pool,
    // and the next query opens another; without a listener it would crash the process.
    pool.on('error', () => {});
    try {
      await migrate(pool, schema, options.migrations ?? MIGRATIONS.length);
    } catch (error) {
      await pool.end();
      throw error;
    }
    const slack = Math.max(0, Math.floor(options.changeSlack ?? POSTGRES_CHANGE_SLACK));
    return withTypedErrors(new PostgresStore(pool, slack), classifyPostgresError);
  }

  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      let broken: Error | undefined;
      // The server may end the session between two statements (idle-in-transaction timeout,
      // a restart): a checked-out client then emits 'error', which must not crash the process.
      // The next statement fails, and the client is dropped below.
      const onError = (err: Error) => {
        broken ??= err;
      };
      client.on('error', onError);
      try {
        await client.query(begin);
        const result = await work(client);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackError) {
          broken = rollbackError as Error;
        }
        if (broken === undefined && attempt < MAX_ATTEMPTS && isRetryable(error)) continue;
        throw error;
      } finally {
        client.off('error', onError);
        client.release(broken);
      }
    }
  }

  async append(drafts: readonly MessageDraft[]): Promise<AppendResult[]> {
    if (drafts.length === 0) return [];
    const fence = currentWriteFence();
    let taken: [ShardClaim, number][] = [];
    const results = await this.transaction(async (client) => {
      if (fence) taken = await holdFence(client, fence);
      await checkHomes(client, drafts);
      return appendBatch(client, drafts, this.slack);
    }, beginWithKeys(drafts));
    // Only once committed: a rolled-back take left the epoch where it was.
    for (const [claim, epoch] of taken) claim.epoch = Math.max(claim.epoch ?? 0, epoch);
    return results;
  }

  async heads(conversationIds: readonly string[]): Promise<Map<string, ConversationHead>> {
    const out = new Map<string, ConversationHead>();
    if (conversationIds.length === 0) return out;
    const rows = await run<{ id: string; last_seq: number; home_dc: string }>(this.pool, 'heads', [[...new Set(conversationIds)]]);
    for (const r of rows) out.set(r.id, { lastSeq: r.last_seq, homeDc: r.home_dc });
    return out;
  }

  async replicate(entries: readonly ReplicaEntry[]): Promise<boolean[]> {
    if (entries.length === 0) return [];
    return this.transaction(async (client) => {
      const stored: boolean[] = [];
      const firstStored = new Map<string, number>();
      /** Each writer's last seq stored here, by member (memberKey). */
      const writers = new Map<string, MemberTouch>();
      for (const { message: m, homeDc } of entries) {
        if (m.clientMsgId !== '') await run(client, 'orphanKey', [m.fromUser, m.clientMsgId, m.conversationId, m.seq, Date.now()]);
        const direct = directMembers(m.conversationId);
        const created = (await run(client, 'replicaConversation', [m.conversationId, direct ? 'direct' : 'group', homeDc])).length > 0;
        const inserted = await run(client, 'replicaMessage', [
          m.conversationId, m.seq, m.serverMsgId, m.fromUser, m.fromDevice, m.clientMsgId, m.text, m.sentAtMs,
          m.event ? eventJson(m.event) : null, m.recalledBy ?? m.deletedBy ?? null, contentJson(m),
        ]);
        stored.push(inserted.length > 0);
        if (inserted.length === 0) continue;
        const mentioned = m.deletedBy === undefined ? mentionedIn(m.content) : [];
        if (mentioned.length > 0) await run(client, 'insertMentions', [mentioned.map(() => m.conversationId), mentioned, mentioned.map(() => m.seq)]);
        if (m.deletedBy === undefined && m.recalledBy === undefined) await refFiles(client, [m]);
        await run(client, 'replicaHead', [m.conversationId, m.seq, m.sentAtMs]);
        if (created && direct) {
          const users = [...new Set(direct)];
          await run(client, 'addMembers', [users, users.map(() => m.conversationId), users.map(() => m.sentAtMs)]);
        }
        const effect = effectOfEvent(m.conversationId, m);
        if (effect) await apply(client, m.conversationId, m.seq, m.sentAtMs, effect);
        const key = memberKey(m.conversationId, m.fromUser);
        if ((writers.get(key)?.seq ?? 0) < m.seq) writers.set(key, { conversationId: m.conversationId, userId: m.fromUser, seq: m.seq, change: false });
        const first = firstStored.get(m.conversationId);
        if (first === undefined || m.seq < first) firstStored.set(m.conversationId, m.seq);
      }
      if (firstStored.size > 0) {
        // The writers' read cursors and the change index, as an append writes them (after the effects), their rows
        // locked first (LOCK_MEMBERS).
        const watchers = await run<{ conversation_id: string; user_id: string }>(client, 'watchers', [[...firstStored.keys()], [...firstStored.values()]]);
        const rows = [...writers.values(), ...watchers.map((w) => ({ conversationId: w.conversation_id, userId: w.user_id }))];
        await run(client, 'lockMembers', [rows.map((r) => r.conversationId), rows.map((r) => r.userId)]);
        await touchMembers(client, [...writers.values()]);
        await run(client, 'bumpChanges', [[...firstStored.keys()], [...firstStored.values()], this.slack]);
      }
      return stored;
    }, beginWithKeys(entries.map((e) => e.message)));
  }

  async dcHomes(): Promise<Map<string, HomeRecord>> {
    const rows = await run<HomeRow>(this.pool, 'dcHomes', []);
    return new Map(rows.map((r) => [r.dc!, homeOf(r)]));
  }

  async putDcHome(dc: string, record: HomeRecord): Promise<HomeRecord> {
    return this.transaction(async (client) => {
      // After every append under the old record, before any under the new one (checkHomes).
      await run(client, 'homesExclusive', [dc, HOMES_LOCK]);
      await run(client, 'putDcHome', [dc, record.servedBy, record.epoch, record.state, record.changedAtMs]);
      return homeOf((await run<HomeRow>(client, 'dcHome', [dc]))[0]!);
    });
  }

  async changedSince(sinceMs: number, limit: number): Promise<ConversationChange[]> {
    const rows = await run<{ id: string; last_seq: number; home_dc: string; last_at_ms: number }>(this.pool, 'changedSince', [sinceMs, limit]);
    return rows.map((r) => ({ id: r.id, lastSeq: r.last_seq, homeDc: r.home_dc, lastAtMs: r.last_at_ms }));
  }

  async marksSince(sinceMs: number, limit: number, settleMs = 0): Promise<MarkChanges & { untilMs: number }> {
    const untilMs = Number((await run<{ now: number }>(this.pool, 'nowMs', []))[0]!.now) - settleMs;
    const [reads, cursors, revocations] = await Promise.all([
      run<{ conversation_id: string; user_id: string; read_seq: number; read_at_ms: number }>(this.pool, 'readsSince', [sinceMs, sqlLimit(limit), untilMs]),
      run<{ user_id: string; device_id: string; conversation_id: string; delivered_seq: number; at_ms: number }>(this.pool, 'cursorsSince', [sinceMs, sqlLimit(limit), untilMs]),
      run<{ user_id: string; device_id: string; before_ms: number; at_ms: number }>(this.pool, 'revocationsSince', [sinceMs, sqlLimit(limit), untilMs]),
    ]);
    return {
      untilMs,
      reads: reads.map((r) => ({ conversationId: r.conversation_id, userId: r.user_id, seq: r.read_seq, atMs: r.read_at_ms })),
      cursors: cursors.map((r) => ({ userId: r.user_id, deviceId: r.device_id, conversationId: r.conversation_id, seq: r.delivered_seq, atMs: r.at_ms })),
      revocations: revocations.map((r) => ({ userId: r.user_id, deviceId: r.device_id, beforeMs: r.before_ms, atMs: r.at_ms })),
    };
  }

  async mergeMarks(changes: MarkChanges): Promise<{ moved: MarkChanges['reads']; missing: Pick<MarkChanges, 'reads' | 'cursors'> }> {
    return this.transaction(async (client) => {
      const { reads, cursors, revocations } = changes;
      const heldMembers = reads.length === 0 ? [] : await run<{ conversation_id: string; user_id: string }>(client, 'membersHeld', [
        reads.map((r) => r.conversationId), reads.map((r) => r.userId),
      ]);
      const held = new Set(heldMembers.map((r) => `${r.conversation_id}\u0000${r.user_id}`));
      const heldConversations = cursors.length === 0 ? new Set<string>()
        : new Set((await run<{ id: string }>(client, 'conversationsHeld', [[...new Set(cursors.map((c) => c.conversationId))]])).map((r) => r.id));
      const missing = {
        reads: reads.filter((r) => !held.has(`${r.conversationId}\u0000${r.userId}`)),
        cursors: cursors.filter((c) => !heldConversations.has(c.conversationId)),
      };
      // The member rows both merges write, locked first, together (LOCK_MEMBERS).
      const direct = cursors.filter((c) => directMembers(c.conversationId));
      const rows = [...reads, ...direct];
      if (rows.length > 0) await run(client, 'lockMembers', [rows.map((r) => r.conversationId), rows.map((r) => r.userId)]);
      const moved = reads.length === 0 ? [] : await run<{ conversation_id: string; user_id: string; read_seq: number }>(client, 'mergeReads', [
        reads.map((r) => r.conversationId), reads.map((r) => r.userId), reads.map((r) => r.seq),
      ]);
      if (cursors.length > 0) {
        await run(client, 'mergeCursors', [cursors.map((c) => c.userId), cursors.map((c) => c.deviceId), cursors.map((c) => c.conversationId), cursors.map((c) => c.seq)]);
        if (direct.length > 0) {
          await run(client, 'mergeDeliveredMarks', [direct.map((c) => c.userId), direct.map((c) => c.conversationId), direct.map((c) => c.seq)]);
        }
      }
      if (revocations.length > 0) {
        await run(client, 'mergeRevocations', [revocations.map((r) => r.userId), revocations.map((r) => r.deviceId), revocations.map((r) => r.beforeMs)]);
      }
      return { moved: moved.map((r) => ({ conversationId: r.conversation_id, userId: r.user_id, seq: r.read_seq, atMs: 0 })), missing };
    });
  }

  async putRevocation(userId: string, deviceId: string, beforeMs: number): Promise<void> {
    await run(this.pool, 'putRevocation', [userId, deviceId, beforeMs]);
  }

  async dcState(key: string): Promise<string | undefined> {
    return (await run<{ value: string }>(this.pool, 'dcState', [key]))[0]?.value;
  }

  async putDcState(key: string, value: string): Promise<void> {
    await run(this.pool, 'putDcState', [key, value]);
  }

  async orphanFrom(conversationId: string, fromSeq: number, nowMs: number): Promise<number> {
    return this.transaction(async (client) => {
      const moved = await client.query({ name: 'll_orphan', text: SQL.orphan, values: [conversationId, fromSeq, nowMs] });
      await run(client, 'clearMentionsFrom', [conversationId, fromSeq]);
      await run(client, 'clearReactions', [conversationId, fromSeq, Number.MAX_SAFE_INTEGER]);
      await run(client, 'clearReactionCounts', [conversationId, fromSeq, Number.MAX_SAFE_INTEGER]);
      await run(client, 'clearHidden', [conversationId, fromSeq]);
      await run(client, 'rewindHead', [conversationId, fromSeq - 1]);
      await run(client, 'bumpChanges', [[conversationId], [fromSeq], this.slack]);
      return moved.rowCount ?? 0;
    });
  }

  async after(conversationId: string, afterSeq: number, limit: number, maxSeq = NO_LIMIT): Promise<ChatMessage[]> {
    return (await run<MessageRow>(this.pool, 'after', [conversationId, afterSeq, maxSeq, sqlLimit(limit)])).map(toMessage);
  }

  async before(conversationId: string, beforeSeq: number, limit: number, minSeq = 0): Promise<ChatMessage[]> {
    const upper = beforeSeq > 0 ? beforeSeq : NO_LIMIT;
    return (await run<MessageRow>(this.pool, 'before', [conversationId, upper, minSeq, sqlLimit(limit)])).map(toMessage).reverse();
  }

  async message(conversationId: string, seq: number): Promise<ChatMessage | undefined> {
    const [row] = await run<MessageRow>(this.pool, 'one', [conversationId, seq]);
    return row ? toMessage(row) : undefined;
  }

  /**
   * Retention (store.ts): the stored head (identity order, which within a
   * conversation is seq order: its row lock orders the writers, and a
   * message's id is drawn under it), as far as its messages are older than
   * the cutoff and at most `limit` of them, goes by primary key, each
   * conversation's floor raised past what went, in one transaction that
   * locks the conversations first (as append does, in id order). Another
   * node's batch running meanwhile: nothing done here (0).
   */
  async expireBefore(cutoffMs: number, limit: number): Promise<number> {
    if (!(limit >= 1)) return 0;
    return this.transaction(async (client) => {
      const [lock] = await run<{ locked: boolean }>(client, 'retentionLock', []);
      if (!lock?.locked) return 0;
      return expireHead(client, cutoffMs, Math.floor(limit), NO_LIMIT, this.slack);
    });
  }

  /**
   * Retention by partition (store.ts, "Retention"; "Partitions" above), one
   * bounded step, on one connection holding the retention lock (a session
   * lock: a detach runs outside any transaction): finish a drop left half
   * done; roll to a new partition when the current one is `spanMs` old;
   * then, for the oldest partition once every transaction that could still
   * write to it has ended and its last message is older than the cutoff,
   * raise the floors of its next `limit` conversations, or, all raised,
   * detach it (concurrently: reads and writes go on) and drop it. The first
   * partition, when it holds rows from before partitioning, loses its due
   * head row by row meanwhile, as expireBefore.
   */
  async expireByPartition(cutoffMs: number, spanMs: number, limit: number): Promise<{ removed: number; more: boolean }> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    const onError = (err: Error) => {
      broken ??= err;
    };
    client.on('error', onError);
    let locked = false;
    try {
      const { rows: [lock] } = await client.query<{ locked: boolean }>(
        'SELECT pg_try_advisory_lock($1, hashtext(current_schema())) AS locked', [RETENTION_LOCK]);
      locked = lock?.locked === true;
      if (!locked) return { removed: 0, more: false };
      return await partitionStep(client, cutoffMs, Math.max(0, spanMs), Math.max(1, Math.floor(limit)), this.slack);
    } catch (error) {
      // The connection goes, and the lock with it: a transaction the step left open (it failed inside one)
      // must not go back to the pool.
      broken ??= error as Error;
      throw error;
    } finally {
      if (locked && !broken) {
        await client.query('SELECT pg_advisory_unlock($1, hashtext(current_schema()))', [RETENTION_LOCK]).catch((err: unknown) => {
          broken = err as Error;
        });
      }
      client.off('error', onError);
      client.release(broken);
    }
  }

  async pastWindows(conversationId: string, userId: string): Promise<{ fromSeq: number; toSeq: number }[]> {
    const rows = await run<{ joined_seq: number; left_seq: number }>(this.pool, 'pastWindows', [conversationId, userId]);
    return rows.map((r) => ({ fromSeq: Number(r.joined_seq), toSeq: Number(r.left_seq) }));
  }

  async messageByRequest(fromUser: string, clientMsgId: string): Promise<ChatMessage | undefined> {
    if (clientMsgId === '') return undefined;
    const [row] = await run<MessageRow>(this.pool, 'byClientIds', [[fromUser], [clientMsgId]]);
    return row ? toMessage(row) : undefined;
  }

  async unreadCount(conversationId: string, userId: string, afterSeq: number, maxSeq: number): Promise<number> {
    if (maxSeq <= afterSeq) return 0;
    const [row] = await run<{ n: number }>(this.pool, 'unread', [conversationId, afterSeq, maxSeq, userId, UNREAD_COUNT_MAX]);
    return row!.n;
  }

  async members(conversationId: string): Promise<string[]> {
    return (await run<{ user_id: string }>(this.pool, 'members', [conversationId])).map((r) => r.user_id);
  }

  async isMember(conversationId: string, userId: string): Promise<boolean> {
    const [row] = await run<MemberRow>(this.pool, 'membership', [conversationId, userId]);
    return row !== undefined && row.left_seq === null;
  }

  async membership(conversationId: string, userId: string): Promise<Membership | undefined> {
    const [r] = await run<MemberRow>(this.pool, 'membership', [conversationId, userId]);
    if (!r) return undefined;
    const m: Membership = { role: r.role as GroupRoleName, muted: r.muted, joinedSeq: r.joined_seq, readSeq: r.read_seq };
    if (r.left_seq !== null) m.leftSeq = r.left_seq;
    return m;
  }

  async memberships(conversationId: string, userIds: readonly string[]): Promise<Map<string, Membership>> {
    const out = new Map<string, Membership>();
    if (userIds.length === 0) return out;
    for (const r of await run<MemberRow & { user_id: string }>(this.pool, 'memberships', [conversationId, [...new Set(userIds)]])) {
      const m: Membership = { role: r.role as GroupRoleName, muted: r.muted, joinedSeq: r.joined_seq, readSeq: r.read_seq };
      if (r.left_seq !== null) m.leftSeq = r.left_seq;
      out.set(r.user_id, m);
    }
    return out;
  }

  async listForUser(userId: string): Promise<ConversationState[]> {
    return (await run<StateRow>(this.pool, 'listForUser', [userId])).map(stateOf);
  }

  /**
   * A full sync (store.ts, "Sync"): from `from` on, the rows named or with
   * something to read, in change order, limit + 1 of the latter at most, and
   * the horizon, in one statement (one snapshot: every change it does not
   * see is by a transaction at or past the oldest one running then).
   */
  async syncScan(
    userId: string, deviceId: string, cursors: ReadonlyMap<string, number>, limit: number, options: SyncReadOptions & { from?: SyncPosition },
  ): Promise<SyncScan> {
    const want = Math.max(0, Math.floor(limit)) + 1;
    const rows = await run<SyncRow & { horizon: number }>(this.pool, 'syncScan', this.syncScanValues(userId, deviceId, cursors, want, options));
    const found = rows.filter((r) => r.id !== null);
    const content = found.filter((r) => r.content);
    return {
      conversations: [...found.filter((r) => !r.content), ...content.slice(0, want)].map(syncConversationOf),
      cut: content.length > want - 1,
      horizon: Number(rows[0]!.horizon),
    };
  }

  private syncScanValues(
    userId: string, deviceId: string, cursors: ReadonlyMap<string, number>, want: number, options: SyncReadOptions & { from?: SyncPosition },
  ): unknown[] {
    const from = options.from ?? { changeNo: 0, conversationId: '' };
    return [userId, deviceId, cursorsJson(cursors), from.changeNo, from.conversationId, want + cursors.size, this.slack, options.delivered];
  }

  /**
   * EXPLAIN (ANALYZE, FORMAT JSON) of the scan syncScan would run now (the
   * same statement and values): what a sync reads, for tests and diagnosis.
   */
  async explainSyncScan(
    userId: string, deviceId: string, cursors: ReadonlyMap<string, number>, limit: number, options: SyncReadOptions & { from?: SyncPosition },
  ): Promise<unknown> {
    const values = this.syncScanValues(userId, deviceId, cursors, Math.max(0, Math.floor(limit)) + 1, options);
    const { rows } = await this.pool.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${SQL.syncScan}`, values);
    return rows[0]!['QUERY PLAN'];
  }

  async syncStates(
    userId: string, deviceId: string, conversationIds: readonly string[], cursors: ReadonlyMap<string, number>, options: SyncReadOptions,
  ): Promise<SyncConversation[]> {
    if (conversationIds.length === 0) return [];
    const rows = await run<SyncRow>(this.pool, 'syncStates', [
      userId, deviceId, cursorsJson(cursors), [...new Set(conversationIds)], options.delivered,
    ]);
    return rows.map(syncConversationOf);
  }

  async conversationPage(userId: string, limit: number, after: ConversationCursor | undefined, previewChars: number): Promise<ConversationOverview[]> {
    const rows = await run<StateRow & Omit<MessageRow, 'seq' | 'text' | 'conversation_id'> & {
      last_msg_seq: number | null; last_text: string | null; last_length: number | null;
      unread: number; peer_read_seq: number | null; peer_delivered_seq: number | null; group_name: string | null; mentioned: boolean;
    }>(this.pool, 'conversationPage', [
      userId, after?.atMs ?? Number.MAX_SAFE_INTEGER, after?.conversationId ?? '', limit, previewChars, UNREAD_COUNT_MAX,
    ]);
    return rows.map((r) => {
      const c = stateOf(r);
      const overview: ConversationOverview = {
        ...c,
        readSeq: Math.min(c.readSeq, c.lastSeq),
        lastTruncated: (r.last_length ?? 0) > previewChars,
        unread: Number(r.unread),
      };
      if (r.last_msg_seq !== null) {
        overview.lastMessage = toMessage({ ...r, conversation_id: r.id, seq: r.last_msg_seq, text: r.last_text ?? '' });
      }
      if (r.mentioned) overview.mentioned = true;
      if (c.kind === 'direct') {
        overview.peerReadSeq = r.peer_read_seq ?? 0;
        overview.peerDeliveredSeq = r.peer_delivered_seq ?? 0;
      }
      else overview.groupName = r.group_name ?? '';
      return overview;
    });
  }

  async hiddenSeqs(userId: string, conversationId: string, seqs: readonly number[]): Promise<Set<number>> {
    if (seqs.length === 0) return new Set();
    return new Set((await run<{ seq: string }>(this.pool, 'hiddenSeqs', [userId, conversationId, [...new Set(seqs)]])).map((r) => Number(r.seq)));
  }

  async profiles(userIds: readonly string[]): Promise<Map<string, ProfileRecord>> {
    const out = new Map<string, ProfileRecord>();
    if (userIds.length === 0) return out;
    const rows = await run<{ user_id: string; name: string; avatar_url: string; updated_at_ms: string }>(this.pool, 'profiles', [[...new Set(userIds)]]);
    for (const r of rows) out.set(r.user_id, { name: r.name, avatarUrl: r.avatar_url, updatedAtMs: Number(r.updated_at_ms) });
    return out;
  }

  putFile(file: FileRecord): Promise<void> {
    return this.features.putFile(file);
  }

  files(ids: readonly string[]): Promise<Map<string, FileRecord>> {
    return this.features.files(ids);
  }

  mayReadFile(userId: string, fileId: string): Promise<boolean> {
    return this.features.mayReadFile(userId, fileId);
  }

  uploadsSince(userId: string, sinceMs: number): Promise<{ count: number; bytes: number }> {
    return this.features.uploadsSince(userId, sinceMs);
  }

  indexForSearch(messages: readonly { conversationId: string; seq: number }[]): Promise<void> {
    return this.features.indexForSearch(messages);
  }

  search(query: SearchQuery): Promise<ChatMessage[]> {
    return this.features.search(query);
  }

  putPushDevice(device: PushDeviceRecord, maxPerUser: number): Promise<void> {
    return this.features.putPushDevice(device, maxPerUser);
  }

  removePushDevice(userId: string, deviceId: string, token?: string): Promise<void> {
    return this.features.removePushDevice(userId, deviceId, token);
  }

  pushDevices(userIds: readonly string[]): Promise<Map<string, PushDeviceRecord[]>> {
    return this.features.pushDevices(userIds);
  }

  setNotifyMuted(userId: string, conversationId: string, muted: boolean): Promise<void> {
    return this.features.setNotifyMuted(userId, conversationId, muted);
  }

  notifyMuted(conversationId: string, userIds: readonly string[]): Promise<Set<string>> {
    return this.features.notifyMuted(conversationId, userIds);
  }

  queueNotifications(drafts: readonly NotificationDraft[]): Promise<void> {
    return this.features.queueNotifications(drafts);
  }

  claimNotifications(nowMs: number, limit: number, leaseMs: number): Promise<PendingNotification[]> {
    return this.features.claimNotifications(nowMs, limit, leaseMs);
  }

  finishNotification(n: PendingNotification, nextDueAtMs: number): Promise<void> {
    return this.features.finishNotification(n, nextDueAtMs);
  }

  async putProfile(userId: string, profile: ProfileRecord): Promise<void> {
    await run(this.pool, 'putProfile', [userId, profile.name, profile.avatarUrl, profile.updatedAtMs]);
  }

  async react(conversationId: string, seq: number, userId: string, emoji: string, add: boolean, atMs: number, limits: ReactionLimits): Promise<'changed' | 'unchanged' | 'too-many'> {
    return this.transaction(async (client) => {
      const emojis = (await run<{ emoji: string }>(client, 'lockReactionCounts', [conversationId, seq])).map((r) => r.emoji);
      const there = (await run(client, 'hasReaction', [conversationId, seq, emoji, userId])).length > 0;
      if (there === add) return 'unchanged';
      if (!add) {
        await run(client, 'removeReaction', [conversationId, seq, emoji, userId]);
        await run(client, 'countDown', [conversationId, seq, emoji]);
        await run(client, 'dropEmptyCount', [conversationId, seq, emoji]);
        return 'changed';
      }
      if (!emojis.includes(emoji) && emojis.length >= limits.emojisPerMessage) return 'too-many';
      const [mine] = await run<{ n: string }>(client, 'userReactionCount', [conversationId, seq, userId]);
      if (Number(mine?.n ?? 0) >= limits.perUser) return 'too-many';
      await run(client, 'addReaction', [conversationId, seq, emoji, userId, atMs]);
      await run(client, 'countUp', [conversationId, seq, emoji, atMs]);
      return 'changed';
    });
  }

  async reactions(conversationId: string, seqs: readonly number[], usersPerEmoji: number): Promise<Map<number, ReactionData[]>> {
    const out = new Map<number, ReactionData[]>();
    if (seqs.length === 0) return out;
    const rows = await run<{ seq: string; emoji: string; n: number; users: string[] }>(this.pool, 'reactions', [conversationId, [...new Set(seqs)], usersPerEmoji]);
    for (const r of rows) {
      const seq = Number(r.seq);
      const list = out.get(seq);
      const reaction = { emoji: r.emoji, count: Number(r.n), users: r.users };
      if (list) list.push(reaction);
      else out.set(seq, [reaction]);
    }
    return out;
  }

  async blocked(userId: string, limit: number): Promise<string[]> {
    return (await run<{ blocked_id: string }>(this.pool, 'blocked', [userId, limit])).map((r) => r.blocked_id);
  }

  async setBlocked(userId: string, peer: string, blocked: boolean, max: number): Promise<boolean> {
    if (!blocked) {
      await run(this.pool, 'unblock', [userId, peer]);
      return true;
    }
    await run(this.pool, 'block', [userId, peer, Date.now(), max]);
    return (await run(this.pool, 'isBlocked', [userId, peer])).length > 0;
  }

  async blockersOf(peer: string, userIds: readonly string[]): Promise<Set<string>> {
    if (userIds.length === 0) return new Set();
    return new Set((await run<{ user_id: string }>(this.pool, 'blockersOf', [peer, [...new Set(userIds)]])).map((r) => r.user_id));
  }

  async membersAt(conversationId: string, seq: number): Promise<string[]> {
    return (await run<{ user_id: string }>(this.pool, 'membersAt', [conversationId, seq])).map((r) => r.user_id);
  }

  async largeGroups(conversationIds: readonly string[]): Promise<Set<string>> {
    if (conversationIds.length === 0) return new Set();
    return new Set((await run<{ id: string }>(this.pool, 'largeGroups', [[...new Set(conversationIds)]])).map((r) => r.id));
  }

  async memberWindows(conversationId: string, sinceSeq: number): Promise<{ lastSeq: number; windows: MemberWindow[] }> {
    // The seq first: every change up to it committed before it was read (a conversation's seqs commit in order), so the
    // windows read after it hold them all.
    const [head] = await run<{ last_seq: number }>(this.pool, 'lastSeq', [conversationId]);
    if (!head) return { lastSeq: 0, windows: [] };
    const rows = await run<{ user_id: string; joined_seq: number; left_seq: number | null }>(this.pool, 'memberWindows', [conversationId, sinceSeq]);
    return { lastSeq: head.last_seq, windows: rows.map(windowOf) };
  }

  async writersTo(reader: string, writers: readonly string[]): Promise<Set<string>> {
    if (writers.length === 0) return new Set();
    return new Set((await run<{ user_id: string }>(this.pool, 'writersTo', [reader, [...new Set(writers)]])).map((r) => r.user_id));
  }

  async groupCounts(userIds: readonly string[]): Promise<Map<string, number>> {
    if (userIds.length === 0) return new Map();
    const rows = await run<{ user_id: string; n: number }>(this.pool, 'groupCounts', [[...new Set(userIds)]]);
    return new Map(rows.map((r) => [r.user_id, Number(r.n)]));
  }

  async groupMeta(groupId: string): Promise<GroupMeta | undefined> {
    const [g] = await run<{ id: string; name: string; owner: string; muted_all: boolean; dismissed: boolean; created_at_ms: number }>(
      this.pool, 'groupRow', [groupId],
    );
    if (!g) return undefined;
    return {
      groupId: g.id,
      conversationId: `g:${groupId}`,
      name: g.name,
      owner: g.owner,
      mutedAll: g.muted_all,
      dismissed: g.dismissed,
      createdAtMs: g.created_at_ms,
    };
  }

  async group(groupId: string): Promise<GroupRecord | undefined> {
    const meta = await this.groupMeta(groupId);
    if (!meta) return undefined;
    const rows = await run<{ user_id: string; role: string; muted: boolean; read_seq: number }>(this.pool, 'groupMembers', [meta.conversationId]);
    return { ...meta, members: rows.map((m) => ({ userId: m.user_id, role: m.role as GroupRoleName, muted: m.muted, readSeq: m.read_seq })) };
  }

  async markRead(conversationId: string, userId: string, seq: number): Promise<number> {
    const [row] = await run<{ read_seq: number }>(this.pool, 'markRead', [seq, conversationId, userId]);
    return row?.read_seq ?? 0;
  }

  async readCursors(conversationId: string): Promise<Map<string, number>> {
    const rows = await run<{ user_id: string; read_seq: number }>(this.pool, 'readCursors', [conversationId]);
    return new Map(rows.map((r) => [r.user_id, r.read_seq]));
  }

  async advanceDelivered(
    updates: readonly { userId: string; deviceId: string; conversationId: string; seq: number }[],
  ): Promise<DeliveredMark[]> {
    if (updates.length === 0) return [];
    // One row per cursor (the highest of the batch): one statement cannot update a row twice.
    const highest = new Map<string, { userId: string; deviceId: string; conversationId: string; seq: number }>();
    for (const u of updates) {
      const key = JSON.stringify([u.userId, u.deviceId, u.conversationId]);
      const seen = highest.get(key);
      if (!seen || u.seq > seen.seq) highest.set(key, u);
    }
    const rows = [...highest.values()];
    // A single statement: atomic without an explicit transaction.
    await run(this.pool, 'advance', [
      rows.map((u) => u.userId), rows.map((u) => u.deviceId), rows.map((u) => u.conversationId), rows.map((u) => u.seq),
    ]);
    // A user's mark in a 1:1: the highest of its devices' acks in the batch (one row each).
    const marks = new Map<string, { userId: string; conversationId: string; seq: number }>();
    for (const u of rows) {
      if (!directMembers(u.conversationId)) continue;
      const key = JSON.stringify([u.conversationId, u.userId]);
      if ((marks.get(key)?.seq ?? -1) < u.seq) marks.set(key, { userId: u.userId, conversationId: u.conversationId, seq: u.seq });
    }
    if (marks.size === 0) return [];
    const ordered = [...marks.values()];
    const moved = await run<{ user_id: string; conversation_id: string; delivered_seq: number; past_peer: boolean }>(this.pool, 'advanceMarks', [
      ordered.map((m) => m.userId), ordered.map((m) => m.conversationId), ordered.map((m) => m.seq),
    ]);
    return moved.filter((r) => r.past_peer).map((r) => ({ userId: r.user_id, conversationId: r.conversation_id, seq: Number(r.delivered_seq) }));
  }

  async delivered(userId: string, deviceId: string): Promise<Map<string, number>> {
    const rows = await run<{ conversation_id: string; delivered_seq: number }>(this.pool, 'delivered', [userId, deviceId]);
    return new Map(rows.map((r) => [r.conversation_id, r.delivered_seq]));
  }

  async riskRules(): Promise<RiskRulesRecord | undefined> {
    const [r] = await run<{ version: number; document: string; updated_at_ms: number }>(this.pool, 'riskRules', []);
    return r ? { version: Number(r.version), document: r.document, updatedAtMs: Number(r.updated_at_ms) } : undefined;
  }

  async riskRulesVersion(): Promise<number> {
    const [r] = await run<{ version: number }>(this.pool, 'riskRulesVersion', []);
    return r ? Number(r.version) : 0;
  }

  async putRiskRules(document: string, nowMs: number): Promise<number> {
    // A single statement: atomic, and concurrent puts each get their own version.
    const [r] = await run<{ version: number }>(this.pool, 'putRiskRules', [document, nowMs]);
    return Number(r!.version);
  }

  async appendRiskAudit(entries: readonly RiskAuditDraft[]): Promise<void> {
    if (entries.length === 0) return;
    await run(this.pool, 'appendRiskAudit', [
      entries.map((e) => e.atMs), entries.map((e) => e.userId), entries.map((e) => e.rule), entries.map((e) => e.action), entries.map((e) => e.detail),
    ]);
  }

  async riskAudit(query: { limit: number; beforeId?: number; userId?: string }): Promise<RiskAuditEntry[]> {
    if (!(query.limit >= 1)) return [];
    const limit = Math.floor(query.limit);
    const before = query.beforeId ?? NO_LIMIT;
    const rows = query.userId === undefined
      ? await run<RiskAuditRow>(this.pool, 'riskAudit', [before, limit])
      : await run<RiskAuditRow>(this.pool, 'riskAuditByUser', [query.userId, before, limit]);
    return rows.map(toRiskAuditEntry);
  }

  async webhookSecret(candidate: string): Promise<string> {
    const [inserted] = await run<{ value: string }>(this.pool, 'insertSetting', [WEBHOOK_SECRET_KEY, candidate]);
    if (inserted) return inserted.value;
    const [stored] = await run<{ value: string }>(this.pool, 'setting', [WEBHOOK_SECRET_KEY]);
    if (!stored) throw new Error('the webhook secret is neither inserted nor stored');
    return stored.value;
  }

  async firstSeen(userIds: readonly string[], nowMs: number): Promise<Map<string, number>> {
    if (userIds.length === 0) return new Map();
    const users = [...new Set(userIds)];
    await run(this.pool, 'insertFirstSeen', [users, nowMs]);
    const rows = await run<{ user_id: string; first_seen_ms: number }>(this.pool, 'firstSeen', [users]);
    return new Map(rows.map((r) => [r.user_id, Number(r.first_seen_ms)]));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

/** LIMIT as SQLite reads it: a negative limit means none. */
function sqlLimit(limit: number): number | null {
  return limit < 0 ? null : limit;
}

async function migrate(pool: pg.Pool, schema: string | undefined, upTo: number): Promise<void> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onError = (err: Error) => {
    broken ??= err;
  };
  client.on('error', onError); // as in transaction(): a session ended by the server must not crash us
  try {
    await client.query('BEGIN');
    // Held to commit: a second process migrating the same schema waits here, then finds it done.
    await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [MIGRATION_LOCK, schema ?? '']);
    // DDL only when something is missing, so a role without CREATE can open an up-to-date schema.
    if (schema !== undefined) {
      const found = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
      if (found.rowCount === 0) await client.query(`CREATE SCHEMA "${schema}"`);
    }
    const { rows: [table] } = await client.query<{ present: boolean }>(`SELECT to_regclass('schema_version') IS NOT NULL AS present`);
    if (!table?.present) {
      await client.query(`CREATE TABLE schema_version (
        version INTEGER PRIMARY KEY,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`);
    }
    const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_version');
    for (let v = rows[0]?.v ?? 0; v < Math.min(upTo, MIGRATIONS.length); v++) {
      await client.query(MIGRATIONS[v]!);
      await client.query('INSERT INTO schema_version (version) VALUES ($1)', [v + 1]);
    }
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch((e: unknown) => {
      broken = e as Error;
    });
    throw error;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/**
 * Take or check the fence of every shard of the batch, inside the append
 * transaction (the rows stay locked until it ends). Returns the epochs taken,
 * to record on the claims once the transaction committed.
 */
async function holdFence(client: pg.PoolClient, fence: WriteFence): Promise<[ShardClaim, number][]> {
  const taking = fence.claims.filter((c) => c.epoch === undefined);
  const holding = fence.claims.filter((c) => c.epoch !== undefined);
  const taken: [ShardClaim, number][] = [];
  if (taking.length > 0) {
    const rows = await run<{ shard: number; epoch: number }>(client, 'takeShards', [
      taking.map((c) => c.shard), fence.owner, taking.map((c) => c.heldAt),
    ]);
    const epochs = new Map(rows.map((r) => [r.shard, r.epoch]));
    for (const c of taking) {
      const epoch = epochs.get(c.shard);
      if (epoch === undefined) throw new FencedError(`${fence.owner} cannot take shard ${c.shard}: a newer owner holds it`);
      taken.push([c, epoch]);
    }
  }
  if (holding.length > 0) {
    const rows = await run<{ shard: number; epoch: number }>(client, 'checkShards', [holding.map((c) => c.shard)]);
    const epochs = new Map(rows.map((r) => [r.shard, r.epoch]));
    for (const c of holding) {
      const now = epochs.get(c.shard);
      if (now !== c.epoch) {
        throw new FencedError(`${fence.owner} lost shard ${c.shard}: its epoch ${c.epoch} is superseded by ${now ?? 'none'}`);
      }
    }
  }
  // Checked after the locks were granted (that wait can be long): a lease that ran out
  // meanwhile may already be another node's, which would take the shard next.
  const now = Date.now();
  for (const c of fence.claims) {
    if (now >= c.validUntil) throw new FencedError(`${fence.owner}'s lease of shard ${c.shard} ran out before its write`);
  }
  return taken;
}

/**
 * The fresh group sends with `checkSender`: their conversations are locked
 * (a group change takes the same lock to store its event, so it is either
 * committed and seen here, or waits for this transaction), then each sender
 * is checked as Pipeline.prepare did. Throws SendersRefusedError naming
 * those who may not send now.
 */
async function checkSenders(client: pg.PoolClient, drafts: readonly MessageDraft[], plans: readonly Plan[]): Promise<void> {
  const checked = drafts.flatMap((d, i) => (d.checkSender && plans[i]!.fresh ? [i] : []));
  if (checked.length === 0) return;
  const conversations = [...new Set(checked.map((i) => drafts[i]!.conversationId))].sort();
  await run(client, 'lockConversations', [conversations]);
  const rows = await run<{ conversation_id: string; user_id: string; left_seq: number | null; muted: boolean | null; role: string | null; muted_all: boolean | null; dismissed: boolean | null }>(
    client, 'senderStates', [checked.map((i) => drafts[i]!.conversationId), checked.map((i) => drafts[i]!.fromUser)]);
  const state = new Map(rows.map((r) => [`${r.conversation_id}\u0000${r.user_id}`, r]));
  const refused = new Map<number, LonglinkError>();
  for (const i of checked) {
    const d = drafts[i]!;
    const r = state.get(`${d.conversationId}\u0000${d.fromUser}`);
    if (r?.dismissed) refused.set(i, new LonglinkError(ErrorCode.GROUP_DISMISSED, 'the group was dismissed'));
    else if (!r || r.role === null || r.left_seq !== null) refused.set(i, new LonglinkError(ErrorCode.NOT_MEMBER, 'not a member of this group'));
    else if (r.muted) refused.set(i, new LonglinkError(ErrorCode.MUTED, 'you are muted in this group'));
    else if (r.muted_all && r.role === 'member') refused.set(i, new LonglinkError(ErrorCode.MUTED, 'the group is muted; only its owner and admins may send'));
  }
  if (refused.size > 0) throw new SendersRefusedError(refused);
}

/**
 * The head of storage order below `belowId`, as far as its messages are older
 * than the cutoff and at most `limit` of them, goes by primary key, each
 * conversation's floor raised past what went, the conversations locked
 * first (as append does, in id order). In the caller's transaction.
 */
async function expireHead(client: pg.PoolClient, cutoffMs: number, limit: number, belowId: number, slack: number): Promise<number> {
  const head = await run<HeadRow>(client, 'head', [limit, belowId]);
  let n = 0;
  while (n < head.length && Number(head[n]!.sent_at_ms) < cutoffMs) n++;
  if (n === 0) return 0;
  const gone = head.slice(0, n);
  const floors = new Map<string, number>();
  const firsts = new Map<string, number>();
  for (const r of gone) {
    floors.set(r.conversation_id, Math.max(floors.get(r.conversation_id) ?? 0, Number(r.seq) + 1));
    firsts.set(r.conversation_id, Math.min(firsts.get(r.conversation_id) ?? Number(r.seq), Number(r.seq)));
  }
  await run(client, 'lockConversations', [[...floors.keys()]]);
  await run(client, 'expire', [gone.map((r) => r.id)]);
  await run(client, 'raiseFloors', [[...floors.keys()], [...floors.values()]]);
  // A floor that moves changes where a device there stands (a full sync answers its cursor: store.ts, "Sync").
  await run(client, 'bumpChanges', [[...firsts.keys()], [...firsts.values()], slack]);
  return n;
}

/** A `message_partitions` row with what the catalog says of its table. */
interface PartitionRow {
  part: number;
  lower_id: number;
  upper_id: number;
  opened_at_ms: number;
  closed_xmax: number | null;
  floors_after: string;
  floors_done: boolean;
  by_rows: boolean;
  /** Its table exists. */
  present: boolean;
  /** Attached: false; being detached: true; not attached: null. */
  pending: boolean | null;
}

/** `work` in a transaction of its own on this connection. */
async function inTransaction<T>(client: pg.PoolClient, work: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  const result = await work();
  await client.query('COMMIT');
  return result;
}

/** One step of expireByPartition, on its connection, under the retention lock. */
async function partitionStep(client: pg.PoolClient, cutoffMs: number, spanMs: number, limit: number, slack: number): Promise<{ removed: number; more: boolean }> {
  const parts = await run<PartitionRow>(client, 'partitions', []);
  // 1. A drop left half done (the process stopped in it): finish it.
  for (const p of parts) {
    if (!p.floors_done) break;
    await dropPartition(client, p);
    return { removed: 0, more: true };
  }
  // 2. Ids go to the newest partition (a roll stopped before moving them), and those before it are closed.
  const newest = parts.at(-1)!;
  await run(client, 'openPartition', [newest.lower_id]);
  if (parts.some((p) => p !== newest && p.closed_xmax === null)) await run(client, 'closePartitions', [newest.part]);
  // 3. Roll when the newest is spanMs old (or half full), if anything was stored in it.
  const [clock] = await run<{ now: number; horizon: number; next_id: number }>(client, 'partitionClock', []);
  const due = Number(clock!.now) - newest.opened_at_ms >= spanMs || Number(clock!.next_id) >= newest.upper_id - PARTITION_IDS / 2;
  if (due && (await client.query(`SELECT 1 FROM messages_${newest.part} LIMIT 1`)).rowCount! > 0) {
    await rollPartition(client, newest);
    return { removed: 0, more: true };
  }
  // 4. The oldest partition, once closed for good and wholly due: its floors, a batch at a time, then the drop.
  const oldest = parts[0]!;
  const closed = oldest !== newest && oldest.closed_xmax !== null && Number(clock!.horizon) >= oldest.closed_xmax;
  let wholly = false;
  if (closed) {
    const { rows: [last] } = await client.query<{ sent_at_ms: number }>(`SELECT sent_at_ms FROM messages_${oldest.part} ORDER BY id DESC LIMIT 1`);
    wholly = last === undefined || Number(last.sent_at_ms) < cutoffMs;
  }
  if (!wholly) {
    // Rows from before partitioning: the due head, row by row, meanwhile.
    if (!oldest.by_rows) return { removed: 0, more: false };
    const n = await inTransaction(client, () => expireHead(client, cutoffMs, limit, oldest.upper_id, slack));
    return { removed: n, more: n >= limit };
  }
  const batch = (await client.query<{ id: string; first: number; last: number }>({
    text: floorsBatch(oldest.part), values: [oldest.floors_after, limit],
  })).rows;
  const done = batch.length < limit;
  await inTransaction(client, async () => {
    if (batch.length > 0) {
      await run(client, 'lockConversations', [batch.map((r) => r.id)]);
      await run(client, 'raiseFloors', [batch.map((r) => r.id), batch.map((r) => Number(r.last) + 1)]);
      await run(client, 'bumpChanges', [batch.map((r) => r.id), batch.map((r) => Number(r.first)), slack]);
    }
    await run(client, 'floorsProgress', [oldest.part, batch.at(-1)?.id ?? oldest.floors_after, done]);
  });
  if (done) await dropPartition(client, { ...oldest, floors_done: true });
  return { removed: batch.reduce((n, r) => n + Number(r.last) - Number(r.first) + 1, 0), more: true };
}

/**
 * The next `limit` conversations ($2) of partition `part` after $1, in id
 * order, with the first and last seq each has there: a skip scan of its
 * (conversation_id, seq) index, one descent per conversation, not per row.
 * (Within a conversation, a partition holds a run of consecutive seqs.)
 */
function floorsBatch(part: number): string {
  const t = `messages_${part}`;
  return `WITH RECURSIVE c AS (
      (SELECT conversation_id AS id FROM ${t} WHERE conversation_id > $1::text ORDER BY conversation_id LIMIT 1)
      UNION ALL
      SELECT (SELECT x.conversation_id FROM ${t} x WHERE x.conversation_id > c.id ORDER BY x.conversation_id LIMIT 1) FROM c WHERE c.id IS NOT NULL
    )
    SELECT c.id,
      (SELECT x.seq FROM ${t} x WHERE x.conversation_id = c.id ORDER BY x.seq LIMIT 1) AS first,
      (SELECT x.seq FROM ${t} x WHERE x.conversation_id = c.id ORDER BY x.seq DESC LIMIT 1) AS last
    FROM c WHERE c.id IS NOT NULL LIMIT $2`;
}

/**
 * A new partition for the next range of ids, made empty and attached (a
 * lock that lets reads and writes go on), then ids moved to it: what
 * transactions running now still write goes to the one before, closed for
 * good once they have all ended (closed_xmax). Every insert into `messages`
 * is made by a transaction that has written before (append bumps its
 * conversations first, a copy locks its conversation first), so it has its
 * transaction id before it draws a message id.
 */
async function rollPartition(client: pg.PoolClient, newest: PartitionRow): Promise<void> {
  const part = newest.part + 1;
  const [lower, upper] = [newest.upper_id, newest.upper_id + PARTITION_IDS];
  const t = `messages_${part}`;
  await inTransaction(client, async () => {
    await client.query(`SET LOCAL lock_timeout = '5s'`);
    await client.query(`CREATE TABLE ${t} (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`);
    await client.query(`CREATE UNIQUE INDEX ${t}_by_seq ON ${t} (conversation_id, seq)`);
    await client.query(`CREATE UNIQUE INDEX ${t}_by_client_id ON ${t} (from_user, client_msg_id) WHERE client_msg_id <> ''`);
    await client.query(`ALTER TABLE messages ATTACH PARTITION ${t} FOR VALUES FROM (${lower}) TO (${upper})`);
    await run(client, 'addPartition', [part, lower, upper]);
  });
  await run(client, 'openPartition', [lower]);
  await run(client, 'closePartitions', [part]);
}

/** Detach (concurrently, or finish a detach left pending) and drop a partition whose floors are all raised. */
async function dropPartition(client: pg.PoolClient, p: PartitionRow): Promise<void> {
  const t = `messages_${p.part}`;
  if (p.pending === false) await client.query(`ALTER TABLE messages DETACH PARTITION ${t} CONCURRENTLY`);
  else if (p.pending === true) await client.query(`ALTER TABLE messages DETACH PARTITION ${t} FINALIZE`);
  if (p.present) await client.query(`DROP TABLE ${t}`);
  await run(client, 'forgetPartition', [p.part]);
}

/** pg_advisory_xact_lock(HOMES_LOCK, hashtext(dc)): appends to a datacenter's homes (shared) against a change of who serves them (exclusive). */
const HOMES_LOCK = 0x4c4c484d; // 'LLHM'

/** The homes the drafts were written under are still served under those epochs (MessageDraft.homeEpoch); else StoreUnavailableError. */
async function checkHomes(client: pg.PoolClient, drafts: readonly MessageDraft[]): Promise<void> {
  const believed = new Map<string, number>();
  for (const d of drafts) if (d.homeEpoch) believed.set(d.homeEpoch.dc, Math.max(believed.get(d.homeEpoch.dc) ?? 0, d.homeEpoch.epoch));
  if (believed.size === 0) return;
  const dcs = [...believed.keys()].sort();
  await run(client, 'homesShared', [dcs, HOMES_LOCK]);
  const rows = await run<{ dc: string; epoch: number }>(client, 'homeEpochs', [dcs]);
  for (const r of rows) {
    if (Number(r.epoch) > believed.get(r.dc)!) {
      throw new StoreUnavailableError(`the homes of datacenter ${r.dc} moved (epoch ${r.epoch}); the batch is handed again to where they are served now`);
    }
  }
}

async function appendBatch(client: pg.PoolClient, drafts: readonly MessageDraft[], slack: number): Promise<AppendResult[]> {
  // 1. Idempotency keys of the batch already stored.
  const lookup = new Map<string, { fromUser: string; clientMsgId: string }>();
  for (const d of drafts) {
    const key = keyOf(d.fromUser, d.clientMsgId);
    if (key !== undefined) lookup.set(key, { fromUser: d.fromUser, clientMsgId: d.clientMsgId });
  }
  const known = new Map<string, { row: MessageRow } | { draft: number }>();
  if (lookup.size > 0) {
    const keys = [...lookup.values()]; // (locked when the transaction began: beginWithKeys)
    const rows = await run<MessageRow>(client, 'byClientIds', [keys.map((k) => k.fromUser), keys.map((k) => k.clientMsgId)]);
    for (const row of rows) known.set(keyOf(row.from_user, row.client_msg_id)!, { row });
  }

  // Which drafts are new (and their place in their conversation), which repeat a key.
  const conversations: ConversationPlan[] = [];
  const conversationIndex = new Map<string, number>();
  const plans: Plan[] = drafts.map((d, i) => {
    const key = keyOf(d.fromUser, d.clientMsgId);
    const source = key === undefined ? undefined : known.get(key);
    if (source) return { fresh: false, source };
    if (key !== undefined) known.set(key, { draft: i });
    let c = conversationIndex.get(d.conversationId);
    if (c === undefined) {
      c = conversations.length;
      conversationIndex.set(d.conversationId, c);
      conversations.push({ id: d.conversationId, kind: d.kind, first: d, count: 0, lastAtMs: 0, firstSeq: 0, created: false, due: false });
    }
    const conversation = conversations[c]!;
    conversation.lastAtMs = Math.max(conversation.lastAtMs, d.sentAtMs);
    return { fresh: true, conversation: c, ordinal: conversation.count++ };
  });

  await checkSenders(client, drafts, plans);

  if (conversations.length > 0) {
    // 2. Seqs: last_seq += k per conversation, rows locked to commit.
    const bumped = await run<{ id: string; last_seq: number; created: boolean; due: boolean }>(client, 'bumpConversations', [
      conversations.map((c) => c.id), conversations.map((c) => c.kind),
      conversations.map((c) => c.count), conversations.map((c) => c.lastAtMs), slack,
    ]);
    for (const row of bumped) {
      const c = conversations[conversationIndex.get(row.id)!]!;
      c.firstSeq = row.last_seq - c.count + 1;
      c.created = row.created;
      c.due = row.due;
    }

    // 3. Members of the conversations this batch created.
    const newMembers = { users: [] as string[], conversations: [] as string[], at: [] as number[] };
    for (const c of conversations) {
      if (!c.created) continue;
      for (const user of new Set(c.first.members)) {
        newMembers.users.push(user);
        newMembers.conversations.push(c.id);
        newMembers.at.push(c.first.sentAtMs);
      }
    }
    if (newMembers.users.length > 0) {
      await run(client, 'addMembers', [newMembers.users, newMembers.conversations, newMembers.at]);
    }
  }

  // 4. The new messages, in one statement.
  const seqOf = (i: number): number => {
    const plan = plans[i]!;
    if (!plan.fresh) throw new Error('seqOf a duplicate');
    return conversations[plan.conversation]!.firstSeq + plan.ordinal;
  };
  const fresh = drafts.flatMap((d, i) => (plans[i]!.fresh ? [{ d, i, seq: seqOf(i) }] : []));
  if (fresh.length > 0) {
    await run(client, 'insertMessages', [
      fresh.map((f) => f.d.conversationId), fresh.map((f) => f.seq), fresh.map((f) => f.d.serverMsgId),
      fresh.map((f) => f.d.fromUser), fresh.map((f) => f.d.fromDevice), fresh.map((f) => f.d.clientMsgId),
      fresh.map((f) => f.d.text), fresh.map((f) => f.d.sentAtMs), fresh.map((f) => (f.d.event ? eventJson(f.d.event) : null)),
      fresh.map((f) => (f.d.content ? contentJson(f.d) : null)),
    ]);
    const mentions = fresh.flatMap((f) => mentionedIn(f.d.content).map((user) => ({ conversationId: f.d.conversationId, user, seq: f.seq })));
    if (mentions.length > 0) {
      await run(client, 'insertMentions', [mentions.map((m) => m.conversationId), mentions.map((m) => m.user), mentions.map((m) => m.seq)]);
    }
    await refFiles(client, fresh.map((f) => ({ conversationId: f.d.conversationId, seq: f.seq, content: f.d.content })));
  }

  // 5. Effects, in draft order.
  const touched = new Map<string, MemberTouch>();
  for (const { d, seq } of fresh) {
    if (d.effect) await apply(client, d.conversationId, seq, d.sentAtMs, d.effect);
    const key = memberKey(d.conversationId, d.fromUser);
    const seen = touched.get(key);
    if (!seen || seq > seen.seq) touched.set(key, { conversationId: d.conversationId, userId: d.fromUser, seq, change: false });
  }
  // 6. The writers' read cursors and the change index (store.ts, "Sync"): the members who may see what this batch
  // stored have something to read. Only in a conversation whose members_change_no is not recent (due): then every one
  // of them gets this transaction's change number, and so does the conversation; elsewhere each of them has a change
  // number at or above it (joins lower it: joinedChange), recent enough (the change slack). A 1:1's members are known
  // from its id (they never leave); a due group's, those who may see its first seq here, are read (under its row
  // lock: its membership cannot change meanwhile). 7. One UPDATE of them all, with the writers', their rows locked in
  // member order (LOCK_MEMBERS).
  const change = (conversationId: string, userId: string) => {
    const key = memberKey(conversationId, userId);
    touched.set(key, { ...(touched.get(key) ?? { conversationId, userId, seq: 0 }), change: true });
  };
  const groups: ConversationPlan[] = [];
  for (const c of conversations) {
    if (!c.due) continue;
    const pair = directMembers(c.id);
    if (pair) for (const userId of pair) change(c.id, userId);
    else groups.push(c);
  }
  if (groups.length > 0) {
    const watchers = await run<{ conversation_id: string; user_id: string }>(client, 'watchers', [groups.map((c) => c.id), groups.map((c) => c.firstSeq)]);
    for (const w of watchers) change(w.conversation_id, w.user_id);
  }
  await touchMembers(client, touched.values());

  // Results, in draft order. A duplicate gets the original as it stands at that point of the
  // batch (a recall earlier in the batch shows), exactly as if drafts were stored one by one.
  const current = new Map<string, ChatMessage>();
  for (const source of known.values()) {
    if ('row' in source) current.set(placeKey(source.row.conversation_id, source.row.seq), toMessage(source.row));
  }
  return drafts.map((d, i): AppendResult => {
    const plan = plans[i]!;
    if (!plan.fresh) {
      const original = 'row' in plan.source
        ? { conversationId: plan.source.row.conversation_id, seq: plan.source.row.seq }
        : { conversationId: drafts[plan.source.draft]!.conversationId, seq: seqOf(plan.source.draft) };
      return { message: { ...current.get(placeKey(original.conversationId, original.seq))! }, duplicate: true };
    }
    const seq = seqOf(i);
    const message = draftMessage(d, seq);
    // As stored (a read of the row would give a fresh copy of the event).
    const stored: ChatMessage = { ...message };
    if (d.event) stored.event = JSON.parse(JSON.stringify(d.event)) as TimelineEventData;
    current.set(placeKey(d.conversationId, seq), stored);
    const effect = d.effect;
    if ((effect?.op === 'recall' || effect?.op === 'delete' || effect?.op === 'edit') && effect.targetSeq <= seq) {
      const target = current.get(placeKey(d.conversationId, effect.targetSeq));
      if (target && target.recalledBy === undefined && target.deletedBy === undefined) {
        delete target.content;
        if (effect.op === 'edit') {
          target.text = effect.text;
          if (effect.content) target.content = effect.content;
          target.editedAtMs = d.sentAtMs;
        } else {
          target.text = '';
          if (effect.op === 'recall') target.recalledBy = effect.by;
          else target.deletedBy = effect.by;
        }
      }
    }
    return { message, duplicate: false };
  });
}

async function apply(client: pg.PoolClient, conversationId: string, seq: number, atMs: number, effect: Effect): Promise<void> {
  switch (effect.op) {
    case 'create-group': {
      await run(client, 'createGroup', [effect.groupId, effect.name, effect.owner, atMs]);
      const others = [...new Set(effect.members)].filter((user) => user !== effect.owner);
      await join(client, conversationId, seq, atMs, [
        { userId: effect.owner, role: 'owner', readSeq: seq },
        ...others.map((userId) => ({ userId, role: 'member' as const, readSeq: seq - 1 })),
      ]);
      await grown(client, conversationId);
      return;
    }
    case 'add-members':
      await join(client, conversationId, seq, atMs, [...new Set(effect.userIds)].map((userId) => ({ userId, role: 'member', readSeq: seq - 1 })));
      await grown(client, conversationId);
      return;
    case 'remove-members':
      await run(client, 'leaveMembers', [seq, conversationId, [...effect.userIds]]);
      return;
    case 'dismiss':
      await run(client, 'dismissGroup', [groupIdOf(conversationId)]);
      await run(client, 'leaveAll', [seq, conversationId]);
      return;
    case 'set-role':
      await run(client, 'setRole', [effect.role, conversationId, effect.userId]);
      if (effect.role === 'owner') await run(client, 'setOwner', [effect.userId, groupIdOf(conversationId)]);
      return;
    case 'mute':
      if (effect.userId) await run(client, 'muteMember', [effect.muted, conversationId, effect.userId]);
      else await run(client, 'muteGroup', [effect.muted, groupIdOf(conversationId)]);
      return;
    case 'recall':
    case 'delete':
      await run(client, effect.op === 'recall' ? 'recall' : 'deleteMessage', [effect.by, conversationId, effect.targetSeq, seq]);
      if (effect.targetSeq > seq) return;
      await run(client, 'clearMentions', [conversationId, effect.targetSeq]);
      await run(client, 'clearReactions', [conversationId, effect.targetSeq, effect.targetSeq + 1]);
      await run(client, 'clearReactionCounts', [conversationId, effect.targetSeq, effect.targetSeq + 1]);
      return;
    case 'hide':
      await run(client, 'hide', [effect.userId, effect.conversationId, effect.targetSeq]);
      return;
    case 'edit': {
      const content = contentJson({ content: effect.content, editedAtMs: atMs });
      if ((await run(client, 'editMessage', [effect.text, content, conversationId, effect.targetSeq, seq])).length === 0) return;
      await run(client, 'clearMentions', [conversationId, effect.targetSeq]);
      const users = mentionedIn(effect.content);
      if (users.length > 0) await run(client, 'insertMentions', [users.map(() => conversationId), users, users.map(() => effect.targetSeq)]);
      return;
    }
  }
}

/** A group past CHANGE_FANOUT_MAX current members: its members' rows are read at every sync instead (store.ts, "Sync"). */
async function grown(client: pg.PoolClient, conversationId: string): Promise<void> {
  if ((await run(client, 'markBig', [conversationId])).length > 0) await run(client, 'bigMembers', [conversationId]);
}

/** Users (each once) join, or rejoin, at `seq`: a fresh visibility window, unmuted. */
async function join(
  client: pg.PoolClient, conversationId: string, seq: number, atMs: number,
  users: { userId: string; role: GroupRoleName; readSeq: number }[],
): Promise<void> {
  if (users.length === 0) return;
  await run(client, 'keepWindows', [conversationId, users.map((u) => u.userId)]);
  await run(client, 'joinMembers', [
    users.map((u) => u.userId), users.map((u) => u.role), users.map((u) => u.readSeq), conversationId, atMs, seq,
  ]);
  await run(client, 'joinedChange', [conversationId]);
}

/**
 * PostgreSQL's and the driver's errors as the store's typed errors (store.ts):
 * connection and server-state classes (08, 53, 57, 58, serialization 40,
 * lock timeouts 55) and network errors mean unavailable; data exceptions
 * (22) and integrity violations (23) mean the data is refused.
 */
function classifyPostgresError(err: unknown): Error | undefined {
  if (err instanceof FencedError || err instanceof StoreUnavailableError || err instanceof StoreDataError) return undefined;
  const code = (err as { code?: unknown } | null)?.code;
  const message = (err as Error | null)?.message ?? String(err);
  if (typeof code === 'string') {
    if (/^2[23]/.test(code)) return new StoreDataError(message, { cause: err });
    if (/^(08|53|57|58|40|55)/.test(code) || /^E[A-Z]+$/.test(code)) return new StoreUnavailableError(message, { cause: err });
  }
  if (/Connection terminated|connection error|not queryable|timeout exceeded|Query read timeout|ECONNREFUSED|ECONNRESET|Cannot use a pool after calling end/i.test(message)) {
    return new StoreUnavailableError(message, { cause: err });
  }
  return undefined;
}

// Store: messages, conversations, members, device cursors and idempotency
// keys. Split by what each part holds; one implementation object provides all
// of them (`Store`). Every method is async so SQLite and PostgreSQL fit alike.
//
// Contract (test/engines/store.contract.ts), the heart of the four promises:
// - append() is atomic for its whole batch and assigns each conversation's
//   next seq (1, 2, 3, … no gaps) inside the same transaction, so seq is
//   assigned in exactly one place whoever calls.
// - A draft whose (fromUser, clientMsgId) was stored before is not stored
//   again: its result is the original message with `duplicate: true`.
// - Cursors only move forward.
// - Under a write fence (below), append() refuses, with FencedError and
//   nothing written, a batch whose writer lost one of its shards.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { ChatMessage, ContentData, GroupRoleName, LonglinkError, QuoteData, ReactionData, TimelineEventData } from '../protocol/index.js';

export type ConversationKind = 'direct' | 'group';

/**
 * What a timeline event does to the conversation, applied in the same
 * transaction that stores the event, so state and timeline never disagree.
 */
export type Effect =
  | { op: 'create-group'; groupId: string; name: string; owner: string; members: readonly string[] }
  | { op: 'add-members'; userIds: readonly string[] }
  | { op: 'remove-members'; userIds: readonly string[] }
  | { op: 'dismiss' }
  | { op: 'set-role'; userId: string; role: GroupRoleName }
  | { op: 'mute'; userId?: string; muted: boolean }
  | { op: 'recall'; targetSeq: number; by: string }
  /** The sender's new version of targetSeq: its text and whole content (reply and forward kept by the caller), edited at the event's time. */
  | { op: 'edit'; targetSeq: number; text: string; content?: ContentData }
  /** Deleted for everyone: a tombstone. */
  | { op: 'delete'; targetSeq: number; by: string }
  /** Deleted for `userId` only (the event is in its note-to-self conversation; the message in `conversationId`). */
  | { op: 'hide'; userId: string; conversationId: string; targetSeq: number };

/** A message before the store gives it its seq. */
export interface MessageDraft {
  conversationId: string;
  kind: ConversationKind;
  /** Users who belong to the conversation; recorded when it is first created. */
  members: readonly string[];
  fromUser: string;
  fromDevice: string;
  /** Idempotency key, unique per sender; empty means "no dedupe". */
  clientMsgId: string;
  serverMsgId: string;
  text: string;
  sentAtMs: number;
  /** Custom payload, mentions, reply, forward (stored; mentions also indexed for ConversationOverview.mentioned). */
  content?: ContentData;
  /** A reply's quote as the sender saw it: pushed with the message, not stored (reads quote the message as it is then). */
  reply?: QuoteData;
  /**
   * A group send: the store checks again, in the append's own transaction,
   * that its sender may write there now (a current member, not muted; the
   * group neither dismissed nor muted for members), so a group change
   * another process committed meanwhile wins; otherwise the whole append
   * throws SendersRefusedError and writes nothing. Checked by a store shared
   * by several processes (PostgreSQL); the embedded store's one consumer
   * already applies a group's changes and sends in arrival order.
   */
  checkSender?: boolean;
  /** A timeline event (text empty) … */
  event?: TimelineEventData;
  /** … and what it changes. */
  effect?: Effect;
  /**
   * Several datacenters: the conversation's home and the epoch of the record
   * under which the writer serves it (src/dc/homes.ts). The append reads the
   * record in its own transaction (a record being written waits for it, or
   * it waits for the record) and throws StoreUnavailableError, writing
   * nothing, when a newer one is stored: the home moved meanwhile (a
   * failover or a failback), and the batch is handed again to go where it
   * is served now.
   */
  homeEpoch?: { dc: string; epoch: number };
}

export interface AppendResult {
  message: ChatMessage;
  /** True when the draft repeated an earlier (fromUser, clientMsgId). */
  duplicate: boolean;
}

export interface MessageStore {
  /**
   * append() checks every `checkSender` draft itself, in its transaction
   * (a store shared by several processes). Callers then leave the sender's
   * membership and mute to it: a check read before the append, beside a
   * group change committing, could refuse a send while an earlier send of
   * the same connection, read a moment later, was let through.
   */
  readonly checksSenders: boolean;
  /** Store a batch in one transaction (group commit); results in draft order. */
  append(drafts: readonly MessageDraft[]): Promise<AppendResult[]>;
  /** Messages with afterSeq < seq ≤ maxSeq (no bound if absent), ascending, at most limit. */
  after(conversationId: string, afterSeq: number, limit: number, maxSeq?: number): Promise<ChatMessage[]>;
  /** Messages with minSeq ≤ seq < beforeSeq (all if beforeSeq ≤ 0), the newest `limit` of them, ascending. */
  before(conversationId: string, beforeSeq: number, limit: number, minSeq?: number): Promise<ChatMessage[]>;
  /** One message, or undefined. */
  message(conversationId: string, seq: number): Promise<ChatMessage | undefined>;
  /** The message (or event) `fromUser` stored with this idempotency key, if any (how a resent write finds it was applied). */
  messageByRequest(fromUser: string, clientMsgId: string): Promise<ChatMessage | undefined>;
  /** Messages from others than userId, not events, with afterSeq < seq ≤ maxSeq: counted up to UNREAD_COUNT_MAX (a count of it means at least that many). */
  unreadCount(conversationId: string, userId: string, afterSeq: number, maxSeq: number): Promise<number>;
  /**
   * Retention: remove at most `limit` messages and timeline events stored
   * before `cutoffMs` (sent_at_ms < cutoffMs), oldest first, in one short
   * transaction; returns how many were removed (fewer than `limit`: nothing
   * older is left, for now). See "Retention" below.
   */
  expireBefore(cutoffMs: number, limit: number): Promise<number>;
  /**
   * Retention by partition, for a store that keeps messages in partitions of
   * storage order (PostgreSQL; the others return undefined, and retention
   * removes rows with expireBefore). One bounded step per call: roll to a
   * new partition once the current one is `spanMs` old; raise the floors of
   * at most `limit` conversations of the oldest partition once every message
   * in it was stored before `cutoffMs`; then drop it whole. `removed`: the
   * messages the step expired; `more`: call again for the rest. See
   * "Retention" below.
   */
  expireByPartition(cutoffMs: number, spanMs: number, limit: number): Promise<{ removed: number; more: boolean } | undefined>;
}

// ---- Retention ---------------------------------------------------------------
//
// expireBefore() removes messages in the order they were stored (the table's
// ever-growing row id, which within a conversation is seq order), taking the
// stored head while its messages are older than the cutoff: it stops at the
// first message that is not (a message stamped later than those stored after
// it, a node's clock ahead, holds them back until it expires too; keep the
// nodes' clocks in sync). So each conversation loses a prefix of its seqs,
// and remembers where what it holds starts (ConversationState.retainedFromSeq):
// every seq below it is gone, every seq from it to last_seq is held. Nothing
// else moves: last_seq (seqs go on: 1, 2, 3, … is the numbering, not what is
// held), memberships, read and delivered cursors (a cursor below the floor
// only means there is nothing left to fetch down there; unread counts count
// what is held). Idempotency keys live in the message rows and go with them: a
// resend of a removed message's (fromUser, clientMsgId) is stored again, as a
// new message. Keeping them would keep a row per message forever, which is what
// retention is for; a client resends only what it has not seen acked, and a
// retention period is at least a day.
//
// By partition (expireByPartition): the same prefix, taken a partition at a
// time. A partition holds a range of storage order, so dropping the oldest
// removes a prefix of every conversation, as above; it goes once its last
// stored message is older than the cutoff (a message stamped later by a
// clock ahead goes with the partition it was stored in). Floors are raised
// first, in bounded batches, then the partition is detached and dropped
// (nothing is deleted row by row, nothing left to vacuum): a message is
// never served from below its conversation's floor, so a device syncing
// meanwhile jumps over it like over any expired one. Messages are kept up to
// a partition's span longer than the retention period.

/** Earlier membership windows read per user and group (a member removed and added back more often sees only its latest ones). */
export const PAST_WINDOWS_MAX = 100;

/** Unread counts stop here: counting costs a row per message, so a conversation with more says "this many or more". */
export const UNREAD_COUNT_MAX = 1000;

/** Where a page of a user's conversation list resumes: after this (activity time, id), in list order. */
export interface ConversationCursor {
  atMs: number;
  conversationId: string;
}

/** One row of a user's conversation list, with what a summary shows. */
export interface ConversationOverview extends ConversationState {
  /** The latest message this user may see, its text cut to `previewChars` characters. */
  lastMessage?: ChatMessage;
  /** The last message's text was cut (fetch it with history for the whole). */
  lastTruncated: boolean;
  /** Messages from others past the user's read mark, up to UNREAD_COUNT_MAX. */
  unread: number;
  /** 1:1: how far the other member has read. */
  peerReadSeq?: number;
  /** 1:1: how far the other member's devices have received (its delivered mark). */
  peerDeliveredSeq?: number;
  /** Groups: the group's name. */
  groupName?: string;
  /** A message past the user's read mark mentions it (or everyone). */
  mentioned?: boolean;
}

export interface ConversationState {
  conversationId: string;
  kind: ConversationKind;
  /** The latest seq this user may see (capped at its removal). */
  lastSeq: number;
  lastAtMs: number;
  /** First seq this user may see (its join event in a group; 1 in a 1:1). */
  joinedSeq: number;
  /** Set once the user left or was removed: the last seq it may see. */
  leftSeq?: number;
  /** The user's read cursor. */
  readSeq: number;
  /** The user left this group and joined it again: it has earlier windows (pastWindows). */
  rejoined?: boolean;
  /**
   * Set once retention removed messages of the conversation: the first seq
   * still held (every lower one expired; lastSeq + 1 when none is held).
   */
  retainedFromSeq?: number;
}

export interface Membership {
  role: GroupRoleName;
  muted: boolean;
  joinedSeq: number;
  leftSeq?: number;
  readSeq: number;
}

/** A user's latest membership window in a conversation: it may see seqs joinedSeq .. leftSeq - 1 (all from joinedSeq on while leftSeq is absent). */
export interface MemberWindow {
  userId: string;
  joinedSeq: number;
  leftSeq?: number;
}

/** A group without its member list (cheap to read on every message). */
export interface GroupMeta {
  groupId: string;
  conversationId: string;
  name: string;
  owner: string;
  mutedAll: boolean;
  dismissed: boolean;
  createdAtMs: number;
}

export interface GroupRecord extends GroupMeta {
  /** Current members (not those who left), owner first, then by user id. */
  members: { userId: string; role: GroupRoleName; muted: boolean; readSeq: number }[];
}

export interface ConversationStore {
  /** Current members (those who left or were removed are not). */
  members(conversationId: string): Promise<string[]>;
  isMember(conversationId: string, userId: string): Promise<boolean>;
  /** The user's row in a conversation, current or past; undefined if never a member. */
  membership(conversationId: string, userId: string): Promise<Membership | undefined>;
  /** membership() of several users of one conversation at once (one read): those never members are absent. */
  memberships(conversationId: string, userIds: readonly string[]): Promise<Map<string, Membership>>;
  /** The user's conversations (including ones left, up to leaving), most recent activity first. */
  listForUser(userId: string): Promise<ConversationState[]>;
  /**
   * One page of the user's conversation list (listForUser's order) with the
   * summary of each: at most `limit` rows after `after`, a bounded number of
   * index reads per row (one statement on PostgreSQL).
   */
  conversationPage(userId: string, limit: number, after: ConversationCursor | undefined, previewChars: number): Promise<ConversationOverview[]>;
  /**
   * Who may see seq by their latest membership window: joined at or before
   * it and not gone by it (a member removed after seq still may: a push
   * done after the removal reaches it). An earlier window of a user who left
   * and came back is not looked at (that user syncs it).
   */
  membersAt(conversationId: string, seq: number): Promise<string[]>;
  /**
   * The groups among these that are large: they have had more than
   * CHANGE_FANOUT_MAX current members (the mark never goes back, also when
   * the group shrinks). Their pushes go once per gateway, not per member
   * (src/logic/fanout.ts).
   */
  largeGroups(conversationIds: readonly string[]): Promise<Set<string>>;
  /**
   * Who may see a group's messages after `sinceSeq`: the latest membership
   * window of every current member and of every user whose membership ended
   * after sinceSeq (a window is seqs joinedSeq .. leftSeq - 1), read once the
   * conversation stood at `lastSeq`: every change up to lastSeq is in them
   * (a later one may be too). An earlier window of a user who left and joined
   * again is not given.
   */
  memberWindows(conversationId: string, sinceSeq: number): Promise<{ lastSeq: number; windows: MemberWindow[] }>;
  /** Those of `writers` who have written (a message or an action) in a conversation both they and `reader` are current members of. */
  writersTo(reader: string, writers: readonly string[]): Promise<Set<string>>;
  /** How many groups each user is a current member of (users in none are absent). */
  groupCounts(userIds: readonly string[]): Promise<Map<string, number>>;
  /** A group with its current members. */
  group(groupId: string): Promise<GroupRecord | undefined>;
  /** A group without its members. */
  groupMeta(groupId: string): Promise<GroupMeta | undefined>;
  /** Move the user's read cursor forward (never back); returns where it stands. */
  markRead(conversationId: string, userId: string, seq: number): Promise<number>;
  /** Read cursors of every current member. */
  readCursors(conversationId: string): Promise<Map<string, number>>;
  /**
   * The user's earlier membership windows of a group it left and joined again
   * (each [fromSeq, toSeq], ascending), before its current one: a device that
   * had not synced them yet still gets what was stored while it was a member.
   * At most the latest PAST_WINDOWS_MAX of them (a bounded read).
   */
  pastWindows(conversationId: string, userId: string): Promise<{ fromSeq: number; toSeq: number }[]>;
}

export interface DeviceCursor {
  conversationId: string;
  delivered: number;
}

/** A user's delivered mark in a 1:1: the highest delivered cursor of its devices. */
export interface DeliveredMark {
  userId: string;
  conversationId: string;
  seq: number;
}

export interface CursorStore {
  /**
   * Move delivered cursors forward (never back, never past the conversation's
   * last seq), in one transaction. Returns the 1:1 delivered marks (each
   * user's highest over its devices) that moved past a message of the other
   * member, for "delivered" events (a mark moved only past one's own messages
   * tells the other side nothing).
   */
  advanceDelivered(updates: readonly { userId: string; deviceId: string; conversationId: string; seq: number }[]): Promise<DeliveredMark[]>;
  /** The device's delivered cursor per conversation (conversations never acked are absent). */
  delivered(userId: string, deviceId: string): Promise<Map<string, number>>;
}

// ---- Sync: the per-user change index ----------------------------------------
//
// A sync reads only the conversations that changed since the client's last
// sync, not every conversation of the user. Each membership row carries a
// change number (members.change_no), set by the writes that give the member
// something to read there (a message or event it may see, its join, its
// leave) or move where it stands (retention raising the conversation's
// floor), in their own transaction, and indexed per user in change order:
// (change_no, conversation_id) is a membership's position in that order.
//
// Where a client stands in it is the client's to keep, not the server's: a
// full sync's reply carries a sync token (logic/reads.ts), the position up to
// which everything was read to its end by the cursors the request gave (or
// the page read), and the client sends it back with its cursors next time;
// the scan then starts there. A client that lost its data (no token) reads
// every conversation again, from the cursors it sends. A user in 5,000
// conversations of which 3 changed reads 3 rows. (The stores kept a position
// per device before, in device_sync: the server decided what a device had, and
// one that lost its data under the same device id had conversations skipped.
// The table stays, unused, for nodes of the previous version during a rolling
// upgrade: see migration 12.)
//
// A token must never pass a change that may still be committing, nor one a
// writer did not write down (below): each scan reports a horizon (a change
// the scan does not see leaves, on every row it touches, a change number at
// or above it), and where a token's next pass of pages starts (its floor) is
// never past the horizon of its own pass's first scan.
//
// Slack: a membership whose change number is recent already (within the
// store's change slack of the writer's own number) is not written again: a
// busy conversation's member rows are written about once per slack, not once
// per message (each write of an indexed column is a new row version with new
// index entries; the stores keep, per conversation, a number at or below all
// of its members' to skip them all at once). In exchange, horizons are held
// back by the slack: a scan from a token reads again the user's memberships
// changed within the slack before it (a few, unless the user's conversations
// are all busy). It stays sound: a writer w skips only a row whose number is
// at least w − slack, and a scan that does not see w has a horizon of at
// most w − slack (PostgreSQL: w was running, or started later, when the
// scan's snapshot was taken, so w is at or past the oldest transaction
// running then; SQLite: one writer, numbered in commit order), so that row is
// read again by a sync from any token the scan handed out.
//
// Groups larger than CHANGE_FANOUT_MAX current members are not written to on
// every message (a row per member per batch): their members' rows hold
// CHANGE_ALWAYS instead, past any position, so a sync reads them every time
// (one row per such group of the user).
//
// A conversation named in conversation_ids is read from the given cursor
// whatever the change index says (syncStates).

/** Groups with more current members than this are read at every sync instead of written to at every message. */
export const CHANGE_FANOUT_MAX = 200;
/** The change number of the rows of those groups: above every position (2^53 - 1: exact as a JS number). */
export const CHANGE_ALWAYS = Number.MAX_SAFE_INTEGER;

/** A place in a user's change order: (change number, conversation id), compared in that order. */
export interface SyncPosition {
  changeNo: number;
  conversationId: string;
}

/** A conversation as a device's sync reads it. */
export interface SyncConversation extends Omit<ConversationState, 'lastAtMs'> {
  /** The device's cursor: the one the request gave, else (a client without its own cursors) its delivered cursor, else 0. */
  from: number;
  /** The request gave a cursor for it. */
  named: boolean;
  /** Its membership's change number (its position: with conversationId). */
  changeNo: number;
}

export interface SyncScan {
  /**
   * The user's conversations from the position on: first those named in the
   * request's cursors with nothing past them (their cursors are answered),
   * then, in change order, those with something past `from`, at most
   * limit + 1 of them.
   */
  conversations: SyncConversation[];
  /** limit + 1 conversations with something to read were found: more may follow them. */
  cut: boolean;
  /**
   * Every change this scan does not see leaves a change number at or above
   * this on the rows it touches (see "Sync" above): the highest change
   * number a token may hold. Never decreases.
   */
  horizon: number;
}

export interface SyncReadOptions {
  /**
   * A conversation not in the request's cursors is read from the device's
   * delivered cursor (clients that keep no cursors of their own, before sync
   * tokens); otherwise from its start.
   */
  delivered: boolean;
}

export interface SyncStore {
  /**
   * A full sync's conversations (see "Sync" above), from `from` on in the
   * user's change order (every membership when absent). `cursors`: the
   * request's, by conversation. One statement, the limit in it.
   */
  syncScan(
    userId: string, deviceId: string, cursors: ReadonlyMap<string, number>, limit: number,
    options: SyncReadOptions & { from?: SyncPosition },
  ): Promise<SyncScan>;
  /**
   * The named conversations the user belongs or belonged to (others are
   * absent), most recent activity first, whatever changed: a sync of
   * conversation_ids.
   */
  syncStates(
    userId: string, deviceId: string, conversationIds: readonly string[], cursors: ReadonlyMap<string, number>, options: SyncReadOptions,
  ): Promise<SyncConversation[]>;
}

// ---- Risk control -------------------------------------------------------------
//
// What the risk-control feature keeps, shared by every node of a cluster: its
// rules document (versioned, polled by each node), an audit trail of what it
// did, the secret its webhooks are signed with, and when it first saw each user.

/** The risk rules as stored: the document (JSON text), its version and when it was put. */
export interface RiskRulesRecord {
  /** 1 for the first document put, then +1 per put. */
  version: number;
  /** The rules, as JSON text (the store does not read it). */
  document: string;
  updatedAtMs: number;
}

/** An audit entry before the store gives it its id. */
export interface RiskAuditDraft {
  atMs: number;
  userId: string;
  /** The rule that matched. */
  rule: string;
  /** What was done about it. */
  action: string;
  /** Details, as JSON text. */
  detail: string;
}

/** A stored audit entry: `id` grows with each entry appended (newest is highest). */
export interface RiskAuditEntry extends RiskAuditDraft {
  id: number;
}

export interface RiskStore {
  /** The current rules document (JSON text) and its version; undefined before the first put. */
  riskRules(): Promise<RiskRulesRecord | undefined>;
  /** The current version only (0 before the first put): cheap, polled by every node about every 500 ms. */
  riskRulesVersion(): Promise<number>;
  /** Replace the rules document; returns the new version (previous + 1), atomically even with several writers. */
  putRiskRules(document: string, nowMs: number): Promise<number>;
  /** Append audit entries (one transaction). */
  appendRiskAudit(entries: readonly RiskAuditDraft[]): Promise<void>;
  /** Newest first; `beforeId` pages back (entries with a lower id); `userId` filters; limit capped at 1000 by the caller. */
  riskAudit(query: { limit: number; beforeId?: number; userId?: string }): Promise<RiskAuditEntry[]>;
  /** The webhook signing secret shared by every node: stores `candidate` if none is stored yet, and returns the stored one (so concurrent first calls agree). */
  webhookSecret(candidate: string): Promise<string>;
  /** When each user was first seen by the risk service: records nowMs for users never seen, returns each one's first-seen time. */
  firstSeen(userIds: readonly string[], nowMs: number): Promise<Map<string, number>>;
}

// ---- Datacenters --------------------------------------------------------------
//
// Every conversation has a home datacenter, the one that assigns its seqs
// (src/dc/homes.ts). A conversation created here is homed here (home_dc ''),
// one copied from another datacenter by the sync service is homed where it was
// created. The sync service copies what a home committed with replicate().

/** A message another datacenter committed, as the sync service applies it here: at the seq its home gave it. */
export interface ReplicaEntry {
  message: ChatMessage;
  /** The datacenter that committed it: a conversation it creates here is homed there. */
  homeDc: string;
}

/** What a datacenter holds of a conversation. */
export interface ConversationHead {
  /** The highest seq held. */
  lastSeq: number;
  /** The datacenter it was created in; '' for this one. */
  homeDc: string;
}

export interface ReplicaStore {
  /** The head of each conversation held (those not held are absent). */
  heads(conversationIds: readonly string[]): Promise<Map<string, ConversationHead>>;
  /**
   * Store messages another datacenter committed, each at its own seq, in one
   * transaction, with what their timeline events do (the effect is derived
   * from the event, as its home applied it). A (conversation, seq) held
   * already is skipped, effect and all, so applying twice is harmless. Give
   * each conversation's messages in seq order with none missing after its
   * head (the caller fills gaps first). Returns, per entry, whether it was
   * stored now.
   */
  replicate(entries: readonly ReplicaEntry[]): Promise<boolean[]>;
}

/**
 * Who serves a datacenter's homes (assigns the seqs of the conversations
 * homed there): the datacenter itself, or another that took them over. The
 * record with the highest epoch wins wherever records meet.
 */
export interface HomeRecord {
  servedBy: string;
  epoch: number;
  /** `returning`: being handed back to servedBy, which does not serve them until it has caught up. */
  state: 'serving' | 'returning';
  changedAtMs: number;
}

/** A conversation as a catch-up reads it. */
export interface ConversationChange {
  id: string;
  lastSeq: number;
  homeDc: string;
  /** Its last message's time. */
  lastAtMs: number;
}

/**
 * Per-user state another datacenter copies besides messages: read marks,
 * delivered cursors and token revocations, each stamped with when it last
 * changed here (by this store's clock; copies merged from elsewhere are not
 * stamped, so nothing is copied back).
 */
export interface MarkChanges {
  reads: { conversationId: string; userId: string; seq: number; atMs: number }[];
  cursors: { userId: string; deviceId: string; conversationId: string; seq: number; atMs: number }[];
  /** Tokens of the user (of one device; '' every device) issued at or before beforeMs are refused. */
  revocations: { userId: string; deviceId: string; beforeMs: number; atMs: number }[];
}

export interface DatacenterStore {
  /**
   * What changed here at or after sinceMs and at or before untilMs (read
   * marks, delivered cursors, revocations), at most `limit` of each kind,
   * oldest change first. untilMs is now on this store's clock less settleMs
   * (a change stamped before that has committed: what a later call returns
   * from untilMs on is everything else).
   */
  marksSince(sinceMs: number, limit: number, settleMs?: number): Promise<MarkChanges & { untilMs: number }>;
  /**
   * Apply another datacenter's changes: each only moves forward (a read mark
   * or cursor to the higher seq, a revocation to the later time), for members
   * and conversations held here; not stamped. Returns the read marks that
   * moved, and the marks and cursors whose member or conversation is not
   * held here (yet: its copy may be on its way).
   */
  mergeMarks(changes: MarkChanges): Promise<{ moved: MarkChanges['reads']; missing: Pick<MarkChanges, 'reads' | 'cursors'> }>;
  /** Record a revocation made here (stamped): the other datacenters copy it. */
  putRevocation(userId: string, deviceId: string, beforeMs: number): Promise<void>;
  /** A value this datacenter keeps for itself (the sync service's progress per peer). */
  dcState(key: string): Promise<string | undefined>;
  putDcState(key: string, value: string): Promise<void>;
  /** Every record stored (a datacenter without one serves its own homes, epoch 0). */
  dcHomes(): Promise<Map<string, HomeRecord>>;
  /** Store `record` for `dc` if its epoch is higher than the stored one's; returns the record in force. */
  putDcHome(dc: string, record: HomeRecord): Promise<HomeRecord>;
  /** Conversations with activity at or after sinceMs (their last message's time), at most `limit`, oldest activity first. */
  changedSince(sinceMs: number, limit: number): Promise<ConversationChange[]>;
  /**
   * A catch-up found this datacenter's messages of a conversation from
   * `fromSeq` on differ from those of the datacenter that served it: they are
   * moved to orphaned_messages (kept, never served) and the head set back to
   * fromSeq - 1, so the served ones are copied in their place. Returns how many.
   */
  orphanFrom(conversationId: string, fromSeq: number, nowMs: number): Promise<number>;
}

// ---- Blocking ------------------------------------------------------------------
//
// Who blocks whom: a blocked user's 1:1 messages to its blocker are refused
// (BLOCKED) and the blocker's presence looks offline to it. Kept by the
// datacenter where it was set (not copied to the others).

export interface BlockStore {
  /** The users `userId` blocks, sorted, at most `limit`. */
  blocked(userId: string, limit: number): Promise<string[]>;
  /** Block (or unblock) `peer`; false, with nothing written, when blocking one more would pass `max`. */
  setBlocked(userId: string, peer: string, blocked: boolean, max: number): Promise<boolean>;
  /** Those of `userIds` who block `peer`. */
  blockersOf(peer: string, userIds: readonly string[]): Promise<Set<string>>;
}

// ---- Reactions ---------------------------------------------------------------
//
// A user's emoji on a message is there or not; each message keeps a count per
// emoji beside the rows, so a read names the first REACTION_USERS users of an
// emoji and its count without reading every row. Kept where the conversation
// is homed (not copied to other datacenters).

export interface ReactionLimits {
  /** Different emojis one message may carry. */
  emojisPerMessage: number;
  /** Emojis one user may put on one message. */
  perUser: number;
}

export interface ReactionStore {
  /** Add or remove a user's emoji on a message: 'too-many' (nothing written) past a limit. */
  react(conversationId: string, seq: number, userId: string, emoji: string, add: boolean, atMs: number, limits: ReactionLimits): Promise<'changed' | 'unchanged' | 'too-many'>;
  /** The reactions of these messages (those without any are absent): emojis in the order first used, each with its first `usersPerEmoji` users. */
  reactions(conversationId: string, seqs: readonly number[], usersPerEmoji: number): Promise<Map<number, ReactionData[]>>;
}

// ---- Profiles ------------------------------------------------------------------

/** A user's display name and avatar. */
export interface ProfileRecord {
  name: string;
  avatarUrl: string;
  updatedAtMs: number;
}

export interface HiddenStore {
  /** Those of `seqs` in a conversation that `userId` deleted for itself. */
  hiddenSeqs(userId: string, conversationId: string, seqs: readonly number[]): Promise<Set<number>>;
}

export interface ProfileStore {
  /** The profiles of these users (those never set are absent). */
  profiles(userIds: readonly string[]): Promise<Map<string, ProfileRecord>>;
  /** Replace a user's profile. */
  putProfile(userId: string, profile: ProfileRecord): Promise<void>;
}

// ---- Files ---------------------------------------------------------------------
//
// A file's bytes live in a BlobStore (src/files/blobs.ts); the store keeps what
// it is and which messages hold it (file_refs, written with the message from
// its content's attachments), so a download is checked like a read of one of
// those messages.

/** An uploaded file, as its upload stored it. */
export interface FileRecord {
  id: string;
  /** Who uploaded it. */
  ownerId: string;
  name: string;
  /** The type its bytes show (src/files/sniff.ts). */
  mime: string;
  size: number;
  sha256: string;
  /** Images: pixels (0 otherwise). */
  width: number;
  height: number;
  /** A preview is stored under `${id}.preview`. */
  hasPreview: boolean;
  createdAtMs: number;
}

export interface FileStore {
  putFile(file: FileRecord): Promise<void>;
  /** These files (unknown ids are absent). */
  files(ids: readonly string[]): Promise<Map<string, FileRecord>>;
  /**
   * Whether `userId` may download the file: its uploader, or a user who may
   * read a message holding it — a member at that message's seq (in any of
   * its membership windows: a removed member keeps the files of the messages
   * sent while it was one) — while that message is neither recalled,
   * deleted nor expired.
   */
  mayReadFile(userId: string, fileId: string): Promise<boolean>;
  /** What the user uploaded since `sinceMs`: files and bytes (the upload quota). */
  uploadsSince(userId: string, sinceMs: number): Promise<{ count: number; bytes: number }>;
}

// ---- Search --------------------------------------------------------------------
//
// The index holds each message's text as it is now: (re)indexing a message
// reads its row, so an edit indexed before its original, or twice, ends the
// same; a recalled or deleted message (empty text) leaves the index.

export interface SearchQuery {
  userId: string;
  /** Words (letters and digits only, lower case), all of which must match; the last as a prefix. */
  words: readonly string[];
  /** Only this conversation. */
  conversationId?: string;
  offset: number;
  limit: number;
}

export interface SearchStore {
  /** Index (again) these messages as they are now; those gone, recalled, deleted or not text leave the index. Idempotent. */
  indexForSearch(messages: readonly { conversationId: string; seq: number }[]): Promise<void>;
  /**
   * Messages matching every word that `userId` may read (membership windows,
   * not recalled, deleted, expired, hidden by it, nor from a user it blocks),
   * best match first, then newest; at most SEARCH_CANDIDATES matches are ranked.
   */
  search(query: SearchQuery): Promise<ChatMessage[]>;
}

/** The most matches of a search's words (among the asker's conversations) a store ranks: bounds a search's cost. */
export const SEARCH_CANDIDATES = 5000;

// ---- Offline push notifications -----------------------------------------------

export type PushPlatformName = 'apns' | 'fcm' | 'webhook';

/** A device's push token. */
export interface PushDeviceRecord {
  userId: string;
  deviceId: string;
  platform: PushPlatformName;
  token: string;
  updatedAtMs: number;
}

/** A message that reached an offline user, to notify. */
export interface NotificationDraft {
  userId: string;
  conversationId: string;
  seq: number;
  fromUser: string;
  /** When to send it if nothing newer comes first (now + the collapse window). */
  dueAtMs: number;
}

/**
 * A notification waiting to be sent: the burst of one conversation's messages
 * to one user since its last notification (seqs firstSeq..lastSeq, `count` of
 * them reached the user).
 */
export interface PendingNotification {
  userId: string;
  conversationId: string;
  firstSeq: number;
  lastSeq: number;
  count: number;
  fromUser: string;
  dueAtMs: number;
}

export interface PushStore {
  /** Registers a device's token (replacing the device's earlier one); the user's least recently registered beyond `maxPerUser` are dropped. */
  putPushDevice(device: PushDeviceRecord, maxPerUser: number): Promise<void>;
  /** Forgets a device's token; with `token`, only while the device still has that one. */
  removePushDevice(userId: string, deviceId: string, token?: string): Promise<void>;
  /** Each user's registered devices (users with none are absent). */
  pushDevices(userIds: readonly string[]): Promise<Map<string, PushDeviceRecord[]>>;
  setNotifyMuted(userId: string, conversationId: string, muted: boolean): Promise<void>;
  /** Those of `userIds` who muted the conversation's notifications. */
  notifyMuted(conversationId: string, userIds: readonly string[]): Promise<Set<string>>;
  /**
   * Adds each message to its user's pending notification of that conversation
   * (one per user and conversation: a burst collapses). A message at or below
   * the seq last notified, or already counted, changes nothing (the committed
   * stream may hand a message again); the first message of a burst sets its due time.
   */
  queueNotifications(drafts: readonly NotificationDraft[]): Promise<void>;
  /** Claims up to `limit` due notifications for `leaseMs` (a claim whose lease ran out may be taken again, by any node). */
  claimNotifications(nowMs: number, limit: number, leaseMs: number): Promise<PendingNotification[]>;
  /**
   * Ends a claimed notification: records `lastSeq` as notified (so the same
   * messages are never notified again) and drops the pending burst, or, when
   * newer messages joined it meanwhile, keeps only those (due at `nextDueAtMs`).
   */
  finishNotification(n: PendingNotification, nextDueAtMs: number): Promise<void>;
}

export interface Store extends MessageStore, ConversationStore, CursorStore, SyncStore, RiskStore, ReplicaStore, DatacenterStore, BlockStore, ReactionStore, ProfileStore, HiddenStore,
  FileStore, SearchStore, PushStore {
  close(): Promise<void>;
}

// ---- Errors ------------------------------------------------------------------
//
// Each store turns its driver's errors into these, so callers never read
// driver codes: the store being down or busy (wait and retry the same work),
// data it will refuse again (isolate it), and anything else (a bug: retried a
// few times by the bus, then dead-lettered). FencedError is below.

/** The store cannot answer now (down, restarting, overloaded, a lost connection): retrying the same work later can succeed. */
export class StoreUnavailableError extends Error {
  readonly code = 'STORE_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

/** The store refuses this data and will again (a constraint, a value it cannot hold). */
/**
 * append() refused drafts whose `checkSender` failed in its transaction;
 * nothing was written. `refused` maps each such draft's index to the coded
 * reason to answer its sender with; the others may be appended again.
 */
export class SendersRefusedError extends Error {
  readonly code = 'SENDERS_REFUSED';
  constructor(readonly refused: ReadonlyMap<number, LonglinkError>) {
    super(`${refused.size} group send(s) refused: the sender may not write there now`);
    this.name = 'SendersRefusedError';
  }
}

export class StoreDataError extends Error {
  readonly code = 'STORE_DATA';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreDataError';
  }
}

export function isUnavailable(err: unknown): boolean {
  return err instanceof StoreUnavailableError || (err as { code?: unknown } | null)?.code === 'STORE_UNAVAILABLE';
}

export function isStoreDataError(err: unknown): boolean {
  return err instanceof StoreDataError || (err as { code?: unknown } | null)?.code === 'STORE_DATA';
}

/**
 * The store with every async method's driver errors turned into the typed
 * errors above by `classify` (undefined: leave the error as it is).
 */
export function withTypedErrors<S extends object>(store: S, classify: (err: unknown) => Error | undefined): S {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'constructor') return value;
      let fn = wrapped.get(prop);
      if (!fn) {
        fn = function (this: unknown, ...args: unknown[]) {
          const result: unknown = (value as (...a: unknown[]) => unknown).apply(target, args);
          if (result instanceof Promise) return result.catch((err: unknown) => Promise.reject(classify(err) ?? err));
          return result;
        };
        wrapped.set(prop, fn);
      }
      return fn;
    },
  });
}

// ---- Write fencing ----------------------------------------------------------
//
// A distributed bus hands each uplink shard (a slice of the conversations) to
// one consumer at a time through a lease. A consumer paused past its lease
// (SIGSTOP, a stalled VM, a long GC) can wake up holding a batch after another
// node took the shard; the store, not the lease, must then refuse its writes.
//
// The bus runs its handler inside withWriteFence(), naming the shards of the
// batch; logic calls the store as usual (it never sees shards), and a store
// shared by several processes (PostgreSQL) checks the fence in the append
// transaction itself: each shard has an epoch in the store, bumped when a new
// owner makes its first write since taking the lease; a writer whose epoch is
// no longer the shard's, or whose lease is no longer certainly valid, is
// refused. Takes are ordered by when the lease was last proven held (on the
// lock service's clock, `heldAt`), so the first write of an owner that lost its
// lease before writing cannot take the shard back from a newer owner. The
// embedded store has one writer and ignores fences.

/** One shard of a fenced batch, as its owner sees it. The bus owns the object and updates it. */
export interface ShardClaim {
  readonly shard: number;
  /** The shard's epoch this owner holds in the store: undefined until its first write since it took the lease (set by the store). */
  epoch: number | undefined;
  /** Local clock (Date.now) until which the lease is certainly this owner's; moved on by each renewal, 0 once lost. */
  validUntil: number;
  /**
   * When the lease was last proven this owner's (taken or renewed), in µs on
   * the lock service's clock (one clock for every node): a take with an older
   * proof than the shard's current owner's is refused.
   */
  heldAt: number;
}

export interface WriteFence {
  /** The writer (node id), for messages. */
  owner: string;
  claims: readonly ShardClaim[];
}

/** A write refused because its writer lost a shard: nothing was written; the shard's new owner handles the batch. */
export class FencedError extends Error {
  readonly code = 'FENCED';
  constructor(message: string) {
    super(message);
    this.name = 'FencedError';
  }
}

const fences = new AsyncLocalStorage<WriteFence>();

/** Run `work` (and every store call it makes, however deep) under a write fence. */
export function withWriteFence<T>(fence: WriteFence, work: () => T): T {
  return fences.run(fence, work);
}

/** The fence of the current async context, if any. */
export function currentWriteFence(): WriteFence | undefined {
  return fences.getStore();
}

export function isFencedError(err: unknown): boolean {
  return err instanceof FencedError || (err as { code?: unknown } | null)?.code === 'FENCED';
}

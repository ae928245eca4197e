// SQLite store (better-sqlite3) for the embedded server. WAL mode; one write
// transaction per append batch, so throughput is not one flush per message.
//
// Layout: `messages` is keyed by an INTEGER rowid that only grows, so inserts
// append to the end of the table's B-tree; (conversation_id, seq) and
// (from_user, client_msg_id) are small secondary indexes. Rows clustered by
// (conversation, seq) would be inserted at random places (5x slower here).
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { ChatMessage } from '../protocol/index.js';
import type { AppendResult, ConversationState, MessageDraft, Store } from './store.js';

export interface SqliteStoreOptions {
  /** File path, or ':memory:'. */
  path: string;
  /**
   * SQLite `synchronous`: 'full' survives power loss (an fsync per batch);
   * 'normal' survives a process crash. @default 'full'
   */
  synchronous?: 'full' | 'normal';
}

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
];

interface MessageRow {
  conversation_id: string;
  seq: number;
  server_msg_id: string;
  from_user: string;
  from_device: string;
  client_msg_id: string;
  text: string;
  sent_at_ms: number;
}

function toMessage(r: MessageRow): ChatMessage {
  return {
    conversationId: r.conversation_id,
    seq: r.seq,
    serverMsgId: r.server_msg_id,
    fromUser: r.from_user,
    fromDevice: r.from_device,
    clientMsgId: r.client_msg_id,
    text: r.text,
    sentAtMs: r.sent_at_ms,
  };
}

const MESSAGE_COLUMNS = 'conversation_id, seq, server_msg_id, from_user, from_device, client_msg_id, text, sent_at_ms';

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts;
  private readonly appendTx: (drafts: readonly MessageDraft[]) => AppendResult[];
  private readonly advanceTx: (
    updates: readonly { userId: string; deviceId: string; conversationId: string; seq: number }[],
  ) => void;

  constructor(options: SqliteStoreOptions) {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    this.db = new Database(options.path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${(options.synchronous ?? 'full').toUpperCase()}`);
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
    const db = this.db;
    this.stmts = {
      byClientId: db.prepare<[string, string], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE from_user = ? AND client_msg_id = ? AND client_msg_id <> ''`,
      ),
      createConversation: db.prepare<[string, string]>(
        `INSERT INTO conversations (id, kind) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
      ),
      addMember: db.prepare<[string, string, number]>(
        `INSERT INTO members (user_id, conversation_id, joined_at_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
      ),
      nextSeq: db.prepare<[number, string], { last_seq: number }>(
        `UPDATE conversations SET last_seq = last_seq + 1, last_at_ms = max(last_at_ms, ?) WHERE id = ? RETURNING last_seq`,
      ),
      insertMessage: db.prepare(
        `INSERT INTO messages (${MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      after: db.prepare<[string, number, number], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
      ),
      before: db.prepare<[string, number, number], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?`,
      ),
      members: db.prepare<[string], { user_id: string }>(
        `SELECT user_id FROM members WHERE conversation_id = ? ORDER BY user_id`,
      ),
      isMember: db.prepare<[string, string], { one: number }>(
        `SELECT 1 AS one FROM members WHERE conversation_id = ? AND user_id = ?`,
      ),
      listForUser: db.prepare<[string], { id: string; last_seq: number; last_at_ms: number }>(
        `SELECT c.id, c.last_seq, c.last_at_ms FROM members m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.user_id = ? ORDER BY c.last_at_ms DESC, c.id`,
      ),
      advance: db.prepare<[string, string, string, number]>(
        `INSERT INTO device_cursors (user_id, device_id, conversation_id, delivered_seq) VALUES (?, ?, ?, ?)
         ON CONFLICT (user_id, device_id, conversation_id)
         DO UPDATE SET delivered_seq = max(delivered_seq, excluded.delivered_seq)`,
      ),
      delivered: db.prepare<[string, string], { conversation_id: string; delivered_seq: number }>(
        `SELECT conversation_id, delivered_seq FROM device_cursors WHERE user_id = ? AND device_id = ?`,
      ),
    };
    this.appendTx = db.transaction((drafts: readonly MessageDraft[]) => drafts.map((d) => this.appendOne(d)));
    this.advanceTx = db.transaction((updates) => {
      for (const u of updates) this.stmts.advance.run(u.userId, u.deviceId, u.conversationId, u.seq);
    });
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

  private appendOne(d: MessageDraft): AppendResult {
    if (d.clientMsgId !== '') {
      const existing = this.stmts.byClientId.get(d.fromUser, d.clientMsgId);
      if (existing) return { message: toMessage(existing), duplicate: true };
    }
    if (this.stmts.createConversation.run(d.conversationId, d.kind).changes > 0) {
      for (const user of d.members) this.stmts.addMember.run(user, d.conversationId, d.sentAtMs);
    }
    const { last_seq: seq } = this.stmts.nextSeq.get(d.sentAtMs, d.conversationId)!;
    const message: ChatMessage = {
      conversationId: d.conversationId,
      seq,
      serverMsgId: d.serverMsgId,
      fromUser: d.fromUser,
      fromDevice: d.fromDevice,
      clientMsgId: d.clientMsgId,
      text: d.text,
      sentAtMs: d.sentAtMs,
    };
    this.stmts.insertMessage.run(
      d.conversationId, seq, d.serverMsgId, d.fromUser, d.fromDevice, d.clientMsgId, d.text, d.sentAtMs,
    );
    return { message, duplicate: false };
  }

  async append(drafts: readonly MessageDraft[]): Promise<AppendResult[]> {
    if (drafts.length === 0) return [];
    return this.appendTx(drafts);
  }

  async after(conversationId: string, afterSeq: number, limit: number): Promise<ChatMessage[]> {
    return this.stmts.after.all(conversationId, afterSeq, limit).map(toMessage);
  }

  async before(conversationId: string, beforeSeq: number, limit: number): Promise<ChatMessage[]> {
    const upper = beforeSeq > 0 ? beforeSeq : Number.MAX_SAFE_INTEGER;
    return this.stmts.before.all(conversationId, upper, limit).map(toMessage).reverse();
  }

  async members(conversationId: string): Promise<string[]> {
    return this.stmts.members.all(conversationId).map((r) => r.user_id);
  }

  async isMember(conversationId: string, userId: string): Promise<boolean> {
    return this.stmts.isMember.get(conversationId, userId) !== undefined;
  }

  async listForUser(userId: string): Promise<ConversationState[]> {
    return this.stmts.listForUser
      .all(userId)
      .map((r) => ({ conversationId: r.id, lastSeq: r.last_seq, lastAtMs: r.last_at_ms }));
  }

  async advanceDelivered(
    updates: readonly { userId: string; deviceId: string; conversationId: string; seq: number }[],
  ): Promise<void> {
    if (updates.length > 0) this.advanceTx(updates);
  }

  async delivered(userId: string, deviceId: string): Promise<Map<string, number>> {
    return new Map(this.stmts.delivered.all(userId, deviceId).map((r) => [r.conversation_id, r.delivered_seq]));
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

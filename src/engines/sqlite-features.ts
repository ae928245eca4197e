// The SQLite store's tables for files, search and offline push notifications
// (store.ts: FileStore, SearchStore, PushStore). SqliteStore owns the database
// and its migrations; it hands these the connection and wraps each call with
// its durability (a write waits for the WAL flush, a read for the flush of
// what it read).
//
// Search uses FTS5: search_fts holds each indexed message's text under the
// message's rowid, with its conversation and seq (checked again on the way
// back, since SQLite may give a deleted row's rowid to a new row).
import type Database from 'better-sqlite3';
import type { ChatMessage } from '../protocol/index.js';
import { SEARCH_CANDIDATES, type FileRecord, type NotificationDraft, type PendingNotification, type PushDeviceRecord, type PushPlatformName, type SearchQuery } from './store.js';
import { attachedFiles, toMessage, type MessageRow } from './store-rows.js';

interface FileRow {
  id: string;
  owner_id: string;
  name: string;
  mime: string;
  size: number;
  sha256: string;
  width: number;
  height: number;
  has_preview: number;
  created_at_ms: number;
}

interface PendingRow {
  user_id: string;
  conversation_id: string;
  first_seq: number;
  last_seq: number;
  count: number;
  from_user: string;
  due_at_ms: number;
}

const MESSAGE_COLUMNS = 'x.conversation_id, x.seq, x.server_msg_id, x.from_user, x.from_device, x.client_msg_id, x.text, x.sent_at_ms, x.event, x.content, x.recalled_by';

/** The clause a message `x` passes when `@user` may read it: a member at its seq, in some membership window. */
export const READABLE_BY_USER = `(
    (x.seq >= m.joined_seq AND (m.left_seq IS NULL OR x.seq <= m.left_seq))
    OR EXISTS (SELECT 1 FROM member_windows w WHERE w.conversation_id = x.conversation_id AND w.user_id = m.user_id AND x.seq BETWEEN w.joined_seq AND w.left_seq)
  )`;

function fileOf(r: FileRow): FileRecord {
  return {
    id: r.id, ownerId: r.owner_id, name: r.name, mime: r.mime, size: r.size, sha256: r.sha256,
    width: r.width, height: r.height, hasPreview: r.has_preview === 1, createdAtMs: r.created_at_ms,
  };
}

function pendingOf(r: PendingRow): PendingNotification {
  return {
    userId: r.user_id, conversationId: r.conversation_id, firstSeq: r.first_seq, lastSeq: r.last_seq,
    count: r.count, fromUser: r.from_user, dueAtMs: r.due_at_ms,
  };
}

/** An FTS5 query matching every word, the last as a prefix (words are letters and digits only: nothing to escape). */
export function ftsMatch(words: readonly string[]): string {
  return words.map((w, i) => `"${w}"${i === words.length - 1 ? '*' : ''}`).join(' ');
}

export class SqliteFeatures {
  private readonly s;

  constructor(private readonly db: Database.Database) {
    this.s = {
      putFile: db.prepare<[string, string, string, string, number, string, number, number, number, number]>(
        `INSERT INTO files (id, owner_id, name, mime, size, sha256, width, height, has_preview, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      file: db.prepare<[string], FileRow>(`SELECT * FROM files WHERE id = ?`),
      insertFileRef: db.prepare<[string, string, number]>(`INSERT INTO file_refs (file_id, conversation_id, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`),
      mayReadFile: db.prepare<{ user: string; file: string }, { one: number }>(
        `SELECT 1 AS one FROM file_refs r
           JOIN messages x ON x.conversation_id = r.conversation_id AND x.seq = r.seq
           JOIN members m ON m.conversation_id = r.conversation_id AND m.user_id = @user
         WHERE r.file_id = @file AND x.recalled_by IS NULL AND ${READABLE_BY_USER}
         LIMIT 1`,
      ),
      uploadsSince: db.prepare<[string, number], { n: number; bytes: number }>(
        `SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM files WHERE owner_id = ? AND created_at_ms >= ?`,
      ),
      indexed: db.prepare<[string, number], { rid: number; text: string; event: string | null; recalled_by: string | null }>(
        `SELECT rowid AS rid, text, event, recalled_by FROM messages WHERE conversation_id = ? AND seq = ?`,
      ),
      unindex: db.prepare<[number]>(`DELETE FROM search_fts WHERE rowid = ?`),
      index: db.prepare<[number, string, string, number]>(`INSERT INTO search_fts (rowid, text, conversation_id, seq) VALUES (?, ?, ?, ?)`),
      search: db.prepare<{ match: string; user: string; conv: string | null; candidates: number; limit: number; offset: number }, MessageRow>(
        `WITH cand AS (
           SELECT f.rowid AS rid, f.rank AS rank, f.conversation_id AS cid, f.seq AS seq FROM search_fts f
           WHERE search_fts MATCH @match
             AND f.conversation_id IN (SELECT conversation_id FROM members WHERE user_id = @user)
             AND (@conv IS NULL OR f.conversation_id = @conv)
           ORDER BY f.rowid DESC LIMIT @candidates
         )
         SELECT ${MESSAGE_COLUMNS} FROM cand
           JOIN messages x ON x.rowid = cand.rid AND x.conversation_id = cand.cid AND x.seq = cand.seq
           JOIN members m ON m.conversation_id = x.conversation_id AND m.user_id = @user
         WHERE x.event IS NULL AND x.recalled_by IS NULL AND ${READABLE_BY_USER}
           AND NOT EXISTS (SELECT 1 FROM hidden h WHERE h.user_id = @user AND h.conversation_id = x.conversation_id AND h.seq = x.seq)
           AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = @user AND b.blocked_id = x.from_user)
         ORDER BY cand.rank, x.sent_at_ms DESC, x.seq DESC
         LIMIT @limit OFFSET @offset`,
      ),
      putPushDevice: db.prepare<[string, string, string, string, number]>(
        `INSERT INTO push_devices (user_id, device_id, platform, token, updated_at_ms) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (user_id, device_id) DO UPDATE SET platform = excluded.platform, token = excluded.token, updated_at_ms = excluded.updated_at_ms`,
      ),
      // A token is one device's: registered by another user (or device) now, it leaves the earlier one.
      takeToken: db.prepare<[string, string, string, string]>(
        `DELETE FROM push_devices WHERE token = ? AND platform = ? AND NOT (user_id = ? AND device_id = ?)`,
      ),
      trimPushDevices: db.prepare<[string, string, number]>(
        `DELETE FROM push_devices WHERE user_id = ? AND device_id NOT IN
           (SELECT device_id FROM push_devices WHERE user_id = ? ORDER BY updated_at_ms DESC, device_id LIMIT ?)`,
      ),
      removePushDevice: db.prepare<[string, string]>(`DELETE FROM push_devices WHERE user_id = ? AND device_id = ?`),
      removePushToken: db.prepare<[string, string, string]>(`DELETE FROM push_devices WHERE user_id = ? AND device_id = ? AND token = ?`),
      pushDevices: db.prepare<[string], { user_id: string; device_id: string; platform: string; token: string; updated_at_ms: number }>(
        `SELECT * FROM push_devices WHERE user_id = ? ORDER BY updated_at_ms DESC, device_id`,
      ),
      mute: db.prepare<[string, string]>(`INSERT INTO notify_mutes (conversation_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING`),
      unmute: db.prepare<[string, string]>(`DELETE FROM notify_mutes WHERE conversation_id = ? AND user_id = ?`),
      muted: db.prepare<[string, string], { user_id: string }>(
        `SELECT user_id FROM notify_mutes WHERE conversation_id = ? AND user_id IN (SELECT value FROM json_each(?))`,
      ),
      notified: db.prepare<[string, string], { notified_seq: number }>(`SELECT notified_seq FROM notify_marks WHERE user_id = ? AND conversation_id = ?`),
      queue: db.prepare<[string, string, number, number, string, number]>(
        `INSERT INTO notify_pending (user_id, conversation_id, first_seq, last_seq, count, from_user, due_at_ms) VALUES (?, ?, ?, ?, 1, ?, ?)
         ON CONFLICT (user_id, conversation_id) DO UPDATE SET
           count = count + (excluded.last_seq > last_seq),
           from_user = CASE WHEN excluded.last_seq > last_seq THEN excluded.from_user ELSE from_user END,
           last_seq = max(last_seq, excluded.last_seq)`,
      ),
      due: db.prepare<[number, number, number], PendingRow>(
        `SELECT user_id, conversation_id, first_seq, last_seq, count, from_user, due_at_ms FROM notify_pending
         WHERE due_at_ms <= ? AND claimed_until_ms <= ? ORDER BY due_at_ms LIMIT ?`,
      ),
      claim: db.prepare<[number, string, string]>(`UPDATE notify_pending SET claimed_until_ms = ? WHERE user_id = ? AND conversation_id = ?`),
      markNotified: db.prepare<[string, string, number]>(
        `INSERT INTO notify_marks (user_id, conversation_id, notified_seq) VALUES (?, ?, ?)
         ON CONFLICT (user_id, conversation_id) DO UPDATE SET notified_seq = max(notified_seq, excluded.notified_seq)`,
      ),
      dropPending: db.prepare<[string, string, number]>(`DELETE FROM notify_pending WHERE user_id = ? AND conversation_id = ? AND last_seq <= ?`),
      keepNewer: db.prepare<[number, number, number, string, string]>(
        `UPDATE notify_pending SET first_seq = ?, count = max(count - ?, 1), due_at_ms = ?, claimed_until_ms = 0 WHERE user_id = ? AND conversation_id = ?`,
      ),
    };
  }

  // ---- files

  putFile(f: FileRecord): void {
    this.s.putFile.run(f.id, f.ownerId, f.name, f.mime, f.size, f.sha256, f.width, f.height, f.hasPreview ? 1 : 0, f.createdAtMs);
  }

  files(ids: readonly string[]): Map<string, FileRecord> {
    const out = new Map<string, FileRecord>();
    for (const id of new Set(ids)) {
      const r = this.s.file.get(id);
      if (r) out.set(id, fileOf(r));
    }
    return out;
  }

  /** With the message it is in (appends, copies from other datacenters). */
  refFiles(m: Pick<ChatMessage, 'conversationId' | 'seq' | 'content'>): void {
    for (const id of attachedFiles(m.content)) this.s.insertFileRef.run(id, m.conversationId, m.seq);
  }

  mayReadFile(userId: string, fileId: string): boolean {
    const f = this.s.file.get(fileId);
    if (!f) return false;
    return f.owner_id === userId || this.s.mayReadFile.get({ user: userId, file: fileId }) !== undefined;
  }

  uploadsSince(userId: string, sinceMs: number): { count: number; bytes: number } {
    const r = this.s.uploadsSince.get(userId, sinceMs)!;
    return { count: r.n, bytes: r.bytes };
  }

  // ---- search

  readonly indexForSearch = (refs: readonly { conversationId: string; seq: number }[]): void => {
    this.db.transaction(() => {
      for (const { conversationId, seq } of refs) {
        const row = this.s.indexed.get(conversationId, seq);
        if (!row) continue;
        this.s.unindex.run(row.rid);
        if (row.event === null && row.recalled_by === null && row.text !== '') this.s.index.run(row.rid, row.text, conversationId, seq);
      }
    })();
  };

  search(q: SearchQuery): ChatMessage[] {
    return this.s.search.all({
      match: ftsMatch(q.words), user: q.userId, conv: q.conversationId ?? null, candidates: SEARCH_CANDIDATES, limit: q.limit, offset: q.offset,
    }).map(toMessage);
  }

  // ---- push notifications

  readonly putPushDevice = (d: PushDeviceRecord, maxPerUser: number): void => {
    this.db.transaction(() => {
      this.s.takeToken.run(d.token, d.platform, d.userId, d.deviceId);
      this.s.putPushDevice.run(d.userId, d.deviceId, d.platform, d.token, d.updatedAtMs);
      this.s.trimPushDevices.run(d.userId, d.userId, maxPerUser);
    })();
  };

  removePushDevice(userId: string, deviceId: string, token?: string): void {
    if (token === undefined) this.s.removePushDevice.run(userId, deviceId);
    else this.s.removePushToken.run(userId, deviceId, token);
  }

  pushDevices(userIds: readonly string[]): Map<string, PushDeviceRecord[]> {
    const out = new Map<string, PushDeviceRecord[]>();
    for (const userId of new Set(userIds)) {
      const rows = this.s.pushDevices.all(userId);
      if (rows.length > 0) {
        out.set(userId, rows.map((r) => ({
          userId, deviceId: r.device_id, platform: r.platform as PushPlatformName, token: r.token, updatedAtMs: r.updated_at_ms,
        })));
      }
    }
    return out;
  }

  setNotifyMuted(userId: string, conversationId: string, muted: boolean): void {
    if (muted) this.s.mute.run(conversationId, userId);
    else this.s.unmute.run(conversationId, userId);
  }

  notifyMuted(conversationId: string, userIds: readonly string[]): Set<string> {
    if (userIds.length === 0) return new Set();
    return new Set(this.s.muted.all(conversationId, JSON.stringify(userIds)).map((r) => r.user_id));
  }

  readonly queueNotifications = (drafts: readonly NotificationDraft[]): void => {
    this.db.transaction(() => {
      for (const d of drafts) {
        const notified = this.s.notified.get(d.userId, d.conversationId)?.notified_seq ?? 0;
        if (d.seq <= notified) continue;
        this.s.queue.run(d.userId, d.conversationId, d.seq, d.seq, d.fromUser, d.dueAtMs);
      }
    })();
  };

  readonly claimNotifications = (nowMs: number, limit: number, leaseMs: number): PendingNotification[] => {
    return this.db.transaction(() => {
      const rows = this.s.due.all(nowMs, nowMs, limit);
      for (const r of rows) this.s.claim.run(nowMs + leaseMs, r.user_id, r.conversation_id);
      return rows.map(pendingOf);
    })();
  };

  readonly finishNotification = (n: PendingNotification, nextDueAtMs: number): void => {
    this.db.transaction(() => {
      this.s.markNotified.run(n.userId, n.conversationId, n.lastSeq);
      if (this.s.dropPending.run(n.userId, n.conversationId, n.lastSeq).changes === 0) {
        this.s.keepNewer.run(n.lastSeq + 1, n.count, nextDueAtMs, n.userId, n.conversationId);
      }
    })();
  };
}

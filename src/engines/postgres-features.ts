// The PostgreSQL store's tables for files, search and offline push
// notifications (store.ts: FileStore, SearchStore, PushStore). PostgresStore
// owns the pool and the migrations; these run on it.
//
// Search: search_docs holds a tsvector of each indexed message's text, in the
// 'simple' configuration (words lower-cased, no stemming: any language; a run
// of CJK characters is one word). A query's words are ANDed, the last a prefix.
import type pg from 'pg';
import type { ChatMessage } from '../protocol/index.js';
import { SEARCH_CANDIDATES, type FileRecord, type NotificationDraft, type PendingNotification, type PushDeviceRecord, type PushPlatformName, type SearchQuery } from './store.js';
import { attachedFiles, toMessage, type MessageRow } from './store-rows.js';

type Queryable = pg.Pool | pg.PoolClient;

const MESSAGE_COLUMNS = 'x.conversation_id, x.seq, x.server_msg_id, x.from_user, x.from_device, x.client_msg_id, x.text, x.sent_at_ms, x.event, x.recalled_by, x.content';

/** The clause a message `x` of conversation `c` passes when member row `m` may read it (any membership window; not expired). */
const READABLE = `x.seq >= c.retained_from_seq AND (
    (x.seq >= m.joined_seq AND (m.left_seq IS NULL OR x.seq <= m.left_seq))
    OR EXISTS (SELECT 1 FROM member_windows w WHERE w.conversation_id = x.conversation_id AND w.user_id = m.user_id AND x.seq BETWEEN w.joined_seq AND w.left_seq)
  )`;

const SQL = {
  putFile: `INSERT INTO files (id, owner_id, name, mime, size, sha256, width, height, has_preview, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
  files: `SELECT * FROM files WHERE id = ANY($1::text[])`,
  insertFileRefs: `INSERT INTO file_refs (file_id, conversation_id, seq) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) ON CONFLICT DO NOTHING`,
  mayReadFile: `SELECT 1 FROM file_refs r
      JOIN messages x ON x.conversation_id = r.conversation_id AND x.seq = r.seq
      JOIN conversations c ON c.id = r.conversation_id
      JOIN members m ON m.conversation_id = r.conversation_id AND m.user_id = $1
    WHERE r.file_id = $2 AND x.recalled_by IS NULL AND ${READABLE}
    LIMIT 1`,
  uploadsSince: `SELECT count(*)::int8 AS n, coalesce(sum(size), 0)::int8 AS bytes FROM files WHERE owner_id = $1 AND created_at_ms >= $2`,
  // Each message as it is now: text indexed, anything else (gone, recalled, deleted, an event) out of the index.
  unindex: `DELETE FROM search_docs d USING unnest($1::text[], $2::int8[]) AS u(conversation_id, seq)
    WHERE d.conversation_id = u.conversation_id AND d.seq = u.seq`,
  index: `INSERT INTO search_docs (conversation_id, seq, tsv)
    SELECT x.conversation_id, x.seq, to_tsvector('simple', x.text) FROM unnest($1::text[], $2::int8[]) AS u(conversation_id, seq)
      JOIN messages x ON x.conversation_id = u.conversation_id AND x.seq = u.seq
    WHERE x.event IS NULL AND x.recalled_by IS NULL AND x.text <> ''
    ON CONFLICT (conversation_id, seq) DO UPDATE SET tsv = excluded.tsv`,
  search: `WITH q AS (SELECT to_tsquery('simple', $2) AS q),
    cand AS (
      SELECT d.conversation_id, d.seq, ts_rank(d.tsv, q.q) AS rank FROM search_docs d, q
      WHERE d.tsv @@ q.q
        AND d.conversation_id IN (SELECT conversation_id FROM members WHERE user_id = $1)
        AND ($3::text IS NULL OR d.conversation_id = $3)
      LIMIT $4
    )
    SELECT ${MESSAGE_COLUMNS} FROM cand
      JOIN messages x ON x.conversation_id = cand.conversation_id AND x.seq = cand.seq
      JOIN conversations c ON c.id = x.conversation_id
      JOIN members m ON m.conversation_id = x.conversation_id AND m.user_id = $1
    WHERE x.event IS NULL AND x.recalled_by IS NULL AND ${READABLE}
      AND NOT EXISTS (SELECT 1 FROM hidden h WHERE h.user_id = $1 AND h.conversation_id = x.conversation_id AND h.seq = x.seq)
      AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = $1 AND b.blocked_id = x.from_user)
    ORDER BY cand.rank DESC, x.sent_at_ms DESC, x.seq DESC
    LIMIT $5 OFFSET $6`,
  // A token is one device's: registered by another user (or device) now, it leaves the earlier one.
  takeToken: `DELETE FROM push_devices WHERE token = $1 AND platform = $2 AND NOT (user_id = $3 AND device_id = $4)`,
  putPushDevice: `INSERT INTO push_devices (user_id, device_id, platform, token, updated_at_ms) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (user_id, device_id) DO UPDATE SET platform = excluded.platform, token = excluded.token, updated_at_ms = excluded.updated_at_ms`,
  trimPushDevices: `DELETE FROM push_devices WHERE user_id = $1 AND device_id NOT IN
    (SELECT device_id FROM push_devices WHERE user_id = $1 ORDER BY updated_at_ms DESC, device_id LIMIT $2)`,
  removePushDevice: `DELETE FROM push_devices WHERE user_id = $1 AND device_id = $2 AND ($3::text IS NULL OR token = $3)`,
  pushDevices: `SELECT * FROM push_devices WHERE user_id = ANY($1::text[]) ORDER BY user_id, updated_at_ms DESC, device_id`,
  mute: `INSERT INTO notify_mutes (conversation_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
  unmute: `DELETE FROM notify_mutes WHERE conversation_id = $1 AND user_id = $2`,
  muted: `SELECT user_id FROM notify_mutes WHERE conversation_id = $1 AND user_id = ANY($2::text[])`,
  // The bursts of these (user, conversation) pairs, locked, with the seq each was last notified at.
  pendingFor: `SELECT u.user_id, u.conversation_id, p.first_seq, p.last_seq, p.count, p.from_user, p.due_at_ms, coalesce(k.notified_seq, 0) AS notified_seq
    FROM unnest($1::text[], $2::text[]) AS u(user_id, conversation_id)
      LEFT JOIN notify_pending p ON p.user_id = u.user_id AND p.conversation_id = u.conversation_id
      LEFT JOIN notify_marks k ON k.user_id = u.user_id AND k.conversation_id = u.conversation_id`,
  lockPending: `SELECT 1 FROM notify_pending p JOIN unnest($1::text[], $2::text[]) AS u(user_id, conversation_id)
    ON p.user_id = u.user_id AND p.conversation_id = u.conversation_id FOR UPDATE OF p`,
  putPending: `INSERT INTO notify_pending (user_id, conversation_id, first_seq, last_seq, count, from_user, due_at_ms)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int4[], $6::text[], $7::int8[])
    ON CONFLICT (user_id, conversation_id) DO UPDATE SET last_seq = excluded.last_seq, count = excluded.count, from_user = excluded.from_user`,
  // Any node claims; SKIP LOCKED keeps two from waiting on each other's rows.
  claim: `UPDATE notify_pending p SET claimed_until_ms = $1 + $3
    FROM (SELECT user_id, conversation_id FROM notify_pending WHERE due_at_ms <= $1 AND claimed_until_ms <= $1
          ORDER BY due_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED) d
    WHERE p.user_id = d.user_id AND p.conversation_id = d.conversation_id
    RETURNING p.user_id, p.conversation_id, p.first_seq, p.last_seq, p.count, p.from_user, p.due_at_ms`,
  markNotified: `INSERT INTO notify_marks (user_id, conversation_id, notified_seq) VALUES ($1, $2, $3)
    ON CONFLICT (user_id, conversation_id) DO UPDATE SET notified_seq = greatest(notify_marks.notified_seq, excluded.notified_seq)`,
  dropPending: `DELETE FROM notify_pending WHERE user_id = $1 AND conversation_id = $2 AND last_seq <= $3`,
  keepNewer: `UPDATE notify_pending SET first_seq = $3, count = greatest(count - $4, 1), due_at_ms = $5, claimed_until_ms = 0
    WHERE user_id = $1 AND conversation_id = $2`,
} as const;

async function run<R extends pg.QueryResultRow>(db: Queryable, name: keyof typeof SQL, values: unknown[]): Promise<pg.QueryResult<R>> {
  return db.query<R>({ name: `llf_${name}`, text: SQL[name], values });
}

interface FileRow {
  id: string;
  owner_id: string;
  name: string;
  mime: string;
  size: number;
  sha256: string;
  width: number;
  height: number;
  has_preview: boolean;
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

/** A tsquery matching every word, the last as a prefix (words are letters and digits only: nothing to escape). */
export function tsQuery(words: readonly string[]): string {
  return words.map((w, i) => `'${w}'${i === words.length - 1 ? ':*' : ''}`).join(' & ');
}

/** File refs of messages being stored (appends, copies from other datacenters), in the writing transaction. */
export async function refFiles(client: pg.PoolClient, messages: readonly Pick<ChatMessage, 'conversationId' | 'seq' | 'content'>[]): Promise<void> {
  const refs = messages.flatMap((m) => attachedFiles(m.content).map((id) => ({ id, m })));
  if (refs.length === 0) return;
  await run(client, 'insertFileRefs', [refs.map((r) => r.id), refs.map((r) => r.m.conversationId), refs.map((r) => r.m.seq)]);
}

export class PostgresFeatures {
  constructor(
    private readonly pool: pg.Pool,
    private readonly transaction: <T>(work: (client: pg.PoolClient) => Promise<T>) => Promise<T>,
  ) {}

  // ---- files

  async putFile(f: FileRecord): Promise<void> {
    await run(this.pool, 'putFile', [f.id, f.ownerId, f.name, f.mime, f.size, f.sha256, f.width, f.height, f.hasPreview, f.createdAtMs]);
  }

  async files(ids: readonly string[]): Promise<Map<string, FileRecord>> {
    const out = new Map<string, FileRecord>();
    if (ids.length === 0) return out;
    for (const r of (await run<FileRow>(this.pool, 'files', [[...new Set(ids)]])).rows) {
      out.set(r.id, {
        id: r.id, ownerId: r.owner_id, name: r.name, mime: r.mime, size: r.size, sha256: r.sha256,
        width: r.width, height: r.height, hasPreview: r.has_preview, createdAtMs: r.created_at_ms,
      });
    }
    return out;
  }

  async mayReadFile(userId: string, fileId: string): Promise<boolean> {
    const file = (await this.files([fileId])).get(fileId);
    if (!file) return false;
    return file.ownerId === userId || (await run(this.pool, 'mayReadFile', [userId, fileId])).rows.length > 0;
  }

  async uploadsSince(userId: string, sinceMs: number): Promise<{ count: number; bytes: number }> {
    const r = (await run<{ n: number; bytes: number }>(this.pool, 'uploadsSince', [userId, sinceMs])).rows[0]!;
    return { count: r.n, bytes: r.bytes };
  }

  // ---- search

  async indexForSearch(refs: readonly { conversationId: string; seq: number }[]): Promise<void> {
    if (refs.length === 0) return;
    const values = [refs.map((r) => r.conversationId), refs.map((r) => r.seq)];
    await this.transaction(async (client) => {
      await run(client, 'unindex', values);
      await run(client, 'index', values);
    });
  }

  async search(q: SearchQuery): Promise<ChatMessage[]> {
    const rows = await run<MessageRow>(this.pool, 'search', [q.userId, tsQuery(q.words), q.conversationId ?? null, SEARCH_CANDIDATES, q.limit, q.offset]);
    return rows.rows.map(toMessage);
  }

  // ---- push notifications

  async putPushDevice(d: PushDeviceRecord, maxPerUser: number): Promise<void> {
    await this.transaction(async (client) => {
      await run(client, 'takeToken', [d.token, d.platform, d.userId, d.deviceId]);
      await run(client, 'putPushDevice', [d.userId, d.deviceId, d.platform, d.token, d.updatedAtMs]);
      await run(client, 'trimPushDevices', [d.userId, maxPerUser]);
    });
  }

  async removePushDevice(userId: string, deviceId: string, token?: string): Promise<void> {
    await run(this.pool, 'removePushDevice', [userId, deviceId, token ?? null]);
  }

  async pushDevices(userIds: readonly string[]): Promise<Map<string, PushDeviceRecord[]>> {
    const out = new Map<string, PushDeviceRecord[]>();
    if (userIds.length === 0) return out;
    const rows = await run<{ user_id: string; device_id: string; platform: string; token: string; updated_at_ms: number }>(this.pool, 'pushDevices', [[...new Set(userIds)]]);
    for (const r of rows.rows) {
      const list = out.get(r.user_id) ?? [];
      list.push({ userId: r.user_id, deviceId: r.device_id, platform: r.platform as PushPlatformName, token: r.token, updatedAtMs: r.updated_at_ms });
      out.set(r.user_id, list);
    }
    return out;
  }

  async setNotifyMuted(userId: string, conversationId: string, muted: boolean): Promise<void> {
    await run(this.pool, muted ? 'mute' : 'unmute', [conversationId, userId]);
  }

  async notifyMuted(conversationId: string, userIds: readonly string[]): Promise<Set<string>> {
    if (userIds.length === 0) return new Set();
    return new Set((await run<{ user_id: string }>(this.pool, 'muted', [conversationId, [...userIds]])).rows.map((r) => r.user_id));
  }

  async queueNotifications(drafts: readonly NotificationDraft[]): Promise<void> {
    if (drafts.length === 0) return;
    const keyOf = (d: { userId: string; conversationId: string }) => `${d.userId}\n${d.conversationId}`;
    const keys = [...new Map(drafts.map((d) => [keyOf(d), d])).values()];
    const users = keys.map((d) => d.userId);
    const conversations = keys.map((d) => d.conversationId);
    await this.transaction(async (client) => {
      // Locked first: a finish of the same burst waits, or has committed (and its notified seq is read below).
      await run(client, 'lockPending', [users, conversations]);
      // A pair with no burst pending has nulls for the burst's columns (an outer join).
      const rows = (await run<Omit<PendingRow, 'last_seq'> & { last_seq: number | null; notified_seq: number }>(client, 'pendingFor', [users, conversations])).rows;
      const bursts = new Map(rows.map((r) => [keyOf({ userId: r.user_id, conversationId: r.conversation_id }), {
        notified: r.notified_seq,
        pending: r.last_seq === null ? undefined : { firstSeq: r.first_seq, lastSeq: r.last_seq, count: r.count, fromUser: r.from_user, dueAtMs: r.due_at_ms },
      }]));
      const changed = new Map<string, PendingNotification>();
      for (const d of [...drafts].sort((a, b) => a.seq - b.seq)) {
        const key = keyOf(d);
        const b = bursts.get(key)!;
        const p = changed.get(key) ?? (b.pending ? { userId: d.userId, conversationId: d.conversationId, ...b.pending } : undefined);
        // At or below what was notified, or counted already (the stream may hand a message again): nothing changes.
        if (d.seq <= b.notified || (p && d.seq <= p.lastSeq)) continue;
        changed.set(key, p
          ? { ...p, lastSeq: d.seq, count: p.count + 1, fromUser: d.fromUser }
          : { userId: d.userId, conversationId: d.conversationId, firstSeq: d.seq, lastSeq: d.seq, count: 1, fromUser: d.fromUser, dueAtMs: d.dueAtMs });
      }
      const list = [...changed.values()];
      if (list.length === 0) return;
      await run(client, 'putPending', [
        list.map((n) => n.userId), list.map((n) => n.conversationId), list.map((n) => n.firstSeq), list.map((n) => n.lastSeq),
        list.map((n) => n.count), list.map((n) => n.fromUser), list.map((n) => n.dueAtMs),
      ]);
    });
  }

  async claimNotifications(nowMs: number, limit: number, leaseMs: number): Promise<PendingNotification[]> {
    const rows = await run<PendingRow>(this.pool, 'claim', [nowMs, limit, leaseMs]);
    return rows.rows.map((r) => ({
      userId: r.user_id, conversationId: r.conversation_id, firstSeq: r.first_seq, lastSeq: r.last_seq, count: r.count, fromUser: r.from_user, dueAtMs: r.due_at_ms,
    }));
  }

  async finishNotification(n: PendingNotification, nextDueAtMs: number): Promise<void> {
    await this.transaction(async (client) => {
      await run(client, 'markNotified', [n.userId, n.conversationId, n.lastSeq]);
      if ((await run(client, 'dropPending', [n.userId, n.conversationId, n.lastSeq])).rowCount === 0) {
        await run(client, 'keepNewer', [n.userId, n.conversationId, n.lastSeq + 1, n.count, nextDueAtMs]);
      }
    });
  }
}

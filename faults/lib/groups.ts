// The group half of the ledger. Group messages go to whoever is a member when
// each is stored, and the membership changes while the load runs (the churn),
// so what each member is owed is read from the timeline the store recorded
// (PostgreSQL, read directly, not through the server): every membership event
// and its seq. Against it the ledger checks that
// - every acked group message is stored at the seq its ack named;
// - it reached every member of that moment but its sender, once (lost,
//   duplicated), and after the sender's earlier ones (reordered);
// - nobody got a message stored while they were not a member (leaked: a
//   removed member got something stored after its removal);
// - every answered membership change was stored, once.
import pg from 'pg';
import { msgKey, senderOf } from '../../bench/lib/ledger.js';
import type { GroupSpec } from '../load/worker.js';

/** One stored message or event of a group's timeline. */
export interface StoredRow {
  seq: number;
  fromUser: string;
  clientMsgId: string;
  sentAtMs: number;
  event?: { type: string; actor?: string; userIds?: string[] };
}

/**
 * `count` groups of `size` members from users 0 … users-1, none in two
 * groups, spread over the range (so over the load processes). The owner is
 * the first member; the churn removes and adds back the last one.
 */
export function pickGroups(users: number, count: number, size: number): Omit<GroupSpec, 'groupId' | 'conversationId'>[] {
  const step = Math.floor(users / size);
  const shift = Math.floor(step / count);
  if (count === 0) return [];
  if (shift < 1) throw new Error(`${count} groups of ${size} need more than ${users} users`);
  return Array.from({ length: count }, (_, index) => {
    const members = Array.from({ length: size }, (_, j) => (j * step + index * shift + 1) % users);
    return { index, members, owner: members[0]!, target: members[size - 1]! };
  });
}

/** The stored timelines of some conversations, in seq order (retried while PostgreSQL restarts). */
export async function readTimelines(url: string, conversationIds: string[]): Promise<Map<string, StoredRow[]>> {
  for (let attempt = 0; ; attempt++) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      const { rows } = await client.query<{
        conversation_id: string; seq: string; from_user: string; client_msg_id: string; sent_at_ms: string; event: string | null;
      }>(
        `SELECT conversation_id, m.seq::text AS seq, from_user, client_msg_id, sent_at_ms::text AS sent_at_ms, event FROM messages m
          WHERE conversation_id = ANY($1) ORDER BY conversation_id, m.seq`, [conversationIds],
      );
      const out = new Map<string, StoredRow[]>(conversationIds.map((id) => [id, []]));
      for (const r of rows) {
        const row: StoredRow = { seq: Number(r.seq), fromUser: r.from_user, clientMsgId: r.client_msg_id, sentAtMs: Number(r.sent_at_ms) };
        if (r.event !== null) row.event = JSON.parse(r.event) as StoredRow['event'];
        out.get(r.conversation_id)!.push(row);
      }
      for (const rows of out.values()) rows.sort((a, b) => a.seq - b.seq);
      return out;
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

/** Who was a member at which seqs: per user, [joined at, left at] (left: Infinity while a member). */
class Membership {
  private readonly windows = new Map<string, [number, number][]>();

  constructor(timeline: readonly StoredRow[]) {
    for (const row of timeline) {
      const e = row.event;
      if (!e) continue;
      if (e.type === 'group_created') {
        this.join(row.fromUser, row.seq);
        for (const u of e.userIds ?? []) this.join(u, row.seq);
      } else if (e.type === 'members_added') {
        for (const u of e.userIds ?? []) this.join(u, row.seq);
      } else if (e.type === 'members_removed' || e.type === 'member_left') {
        for (const u of e.userIds ?? []) this.leave(u, row.seq);
      } else if (e.type === 'dismissed') {
        for (const u of this.windows.keys()) this.leave(u, row.seq);
      }
    }
  }

  /** Whether `user` may see seq (a member from its join event through its removal event). */
  at(user: string, seq: number): boolean {
    return (this.windows.get(user) ?? []).some(([from, to]) => from <= seq && seq <= to);
  }

  /** `from-to,from-to` (to empty while a member) of the windows that meet [first, last], for the samples. */
  describe(user: string, first = 0, last = Infinity): string {
    return (this.windows.get(user) ?? []).filter(([from, to]) => to >= first && from <= last)
      .map(([from, to]) => `${from}-${to === Infinity ? '' : to}`).join(',');
  }

  private join(user: string, seq: number): void {
    const w = this.windows.get(user) ?? [];
    if (w.length === 0 || w[w.length - 1]![1] !== Infinity) w.push([seq, Infinity]);
    this.windows.set(user, w);
  }

  private leave(user: string, seq: number): void {
    const last = this.windows.get(user)?.at(-1);
    if (last && last[1] === Infinity) last[1] = seq;
  }
}

/** What the load processes' ledgers hold of one phase's group traffic. */
export interface GroupLedger {
  /** key, group index, acked seq, … */
  acked: number[];
  /** key, recipient, seq, group index, … */
  delivered: number[];
  duplicated: number;
  reordered: number;
  /** Request ids of the membership changes answered. */
  ops: string[];
  /** Timeline events released to devices (any phase): recipient, group index, seq, … (to explain a loss). */
  events?: number[];
}

export interface GroupTally {
  /** Group messages acked. */
  acked: number;
  /** Deliveries owed: each acked message × the members of its moment but its sender. */
  due: number;
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  /** Deliveries to a user who was not a member when the message was stored. */
  leaked: number;
  /** Acked messages not stored at their acked seq, and deliveries at another seq than acked (counted in lost / reordered too). */
  seqMismatch: number;
  ops: number;
  /** Membership changes answered but not stored. */
  opsLost: number;
  samples: string[];
}

/** The group ledger of one phase against the stored timelines. `userOf` names a global user index. */
export function tallyGroups(
  ledgers: readonly GroupLedger[], groups: readonly GroupSpec[], timelines: Map<string, StoredRow[]>, userOf: (g: number) => string,
): GroupTally {
  const t: GroupTally = {
    acked: 0, due: 0, delivered: 0, lost: 0, duplicated: 0, reordered: 0, leaked: 0, seqMismatch: 0, ops: 0, opsLost: 0, samples: [],
  };
  const sample = (s: string) => {
    if (t.samples.length < 6) t.samples.push(s);
  };
  const members = groups.map((spec) => new Membership(timelines.get(spec.conversationId) ?? []));
  const bySeq = groups.map((spec) => new Map((timelines.get(spec.conversationId) ?? []).map((r) => [r.seq, r])));
  const storedOps = new Set<string>();
  for (const spec of groups) for (const r of timelines.get(spec.conversationId) ?? []) if (r.event) storedOps.add(r.clientMsgId);
  const delivered = new Set<string>();
  const ackedSeq = new Map<number, number>();
  const eventsSeen = new Map<string, number[]>();
  for (const l of ledgers) {
    for (let i = 0; i < (l.events ?? []).length; i += 3) {
      const id = `${l.events![i + 1]}>${l.events![i]}`;
      eventsSeen.set(id, [...(eventsSeen.get(id) ?? []), l.events![i + 2]!]);
    }
  }
  /** Lost and leaked deliveries by group and user (seqs), to explain them in a few samples. */
  const wrong = new Map<string, { what: 'lost' | 'leaked'; index: number; r: number; seqs: number[] }>();
  const note = (what: 'lost' | 'leaked', index: number, r: number, seq: number) => {
    const id = `${what} ${index}>${r}`;
    const w = wrong.get(id) ?? { what, index, r, seqs: [] };
    w.seqs.push(seq);
    wrong.set(id, w);
  };
  /** When the first and last were stored, the user's membership windows, the membership events it was given around them. */
  const context = (index: number, r: number, seqs: number[]) => {
    const [first, last] = [Math.min(...seqs), Math.max(...seqs)];
    const time = (seq: number) => {
      const at = bySeq[index]?.get(seq)?.sentAtMs;
      return at ? new Date(at).toISOString().slice(11, 23) : '?';
    };
    const near = (eventsSeen.get(`${index}>${r}`) ?? []).filter((s) => s >= first - 20 && s <= last + 20).sort((a, b) => a - b);
    return `stored ${time(first)}-${time(last)}; member ${members[index]?.describe(userOf(r), first - 20, last + 20) ?? '?'}; `
      + `given the events ${near.join(',') || 'none'} around them`;
  };
  for (const l of ledgers) {
    for (let i = 0; i < l.acked.length; i += 3) ackedSeq.set(l.acked[i]!, l.acked[i + 2]!);
    t.duplicated += l.duplicated;
    t.reordered += l.reordered;
  }
  for (const l of ledgers) {
    for (let i = 0; i < l.delivered.length; i += 4) {
      const [key, r, seq, index] = [l.delivered[i]!, l.delivered[i + 1]!, l.delivered[i + 2]!, l.delivered[i + 3]!];
      t.delivered++;
      delivered.add(`${key}>${r}`);
      if (!groups[index] || !members[index]!.at(userOf(r), seq)) {
        t.leaked++;
        note('leaked', index, r, seq);
      }
      const acked = ackedSeq.get(key);
      if (acked !== undefined && acked !== seq) {
        t.seqMismatch++;
        t.reordered++;
        sample(`${senderOf(key)}:${key - msgKey(senderOf(key), 0)} acked at seq ${acked} of g${index}, released to ${r} at ${seq}`);
      }
    }
  }
  for (const l of ledgers) {
    for (let i = 0; i < l.acked.length; i += 3) {
      const [key, index, seq] = [l.acked[i]!, l.acked[i + 1]!, l.acked[i + 2]!];
      t.acked++;
      const spec = groups[index]!;
      const sender = senderOf(key);
      const row = bySeq[index]!.get(seq);
      if (!row || row.fromUser !== userOf(sender) || row.clientMsgId !== String(key)) {
        t.seqMismatch++;
        t.lost++;
        sample(`acked at g${index}:${seq} but stored there: ${row ? `${row.fromUser} ${row.clientMsgId}` : 'nothing'} (${sender}:${key - msgKey(sender, 0)})`);
        continue;
      }
      for (const r of spec.members) {
        if (r === sender || !members[index]!.at(userOf(r), seq)) continue;
        t.due++;
        if (!delivered.has(`${key}>${r}`)) {
          t.lost++;
          note('lost', index, r, seq);
        }
      }
    }
    for (const op of l.ops) {
      t.ops++;
      if (!storedOps.has(`op:${op}`)) {
        t.opsLost++;
        sample(`membership change ${op} answered but not stored`);
      }
    }
  }
  for (const w of wrong.values()) {
    const seqs = [...new Set(w.seqs)].sort((a, b) => a - b);
    sample(`${w.what} to ${userOf(w.r)} in g${w.index}: ${seqs.length} message(s), seq ${seqs.length > 8 ? `${seqs.slice(0, 8).join(',')},…` : seqs.join(',')} `
      + `(${context(w.index, w.r, seqs)})`);
  }
  return t;
}

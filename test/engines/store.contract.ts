// The Store contract (src/engines/store.ts), run against every implementation:
//
//   storeContract('SqliteStore', {
//     open: async () => new SqliteStore({ path: freshPath() }),
//     reopen: async (closed) => new SqliteStore({ path: pathOf(closed) }),
//   });
//
// `open` gives a new, empty store for each test. `reopen`, for engines that
// persist, opens another store on the same database as one the test has
// just closed; with it the persistence tests run too. The contract closes
// every store it opened after each test.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CHANGE_FANOUT_MAX, UNREAD_COUNT_MAX, isUnavailable, type AppendResult, type FileRecord, type MarkChanges, type MessageDraft, type RiskAuditDraft, type Store, type SyncPosition,
} from '../../src/engines/store.js';
import { directConversationId, directMembers, type ChatMessage } from '../../src/protocol/index.js';

export interface StoreFactory {
  /** A new store on a new, empty database; `changeSlack`: its change slack (store.ts, "Sync"), if not the default. */
  open(options?: { changeSlack?: number }): Promise<Store>;
  /** Another store on the database of `closed` (already closed by the test). */
  reopen?(closed: Store): Promise<Store>;
}

const AB = directConversationId('alice', 'bob');
const AC = directConversationId('alice', 'carol');
const AD = directConversationId('alice', 'dave');
const BC = directConversationId('bob', 'carol');

interface DraftOptions {
  text?: string;
  sentAtMs?: number;
  fromDevice?: string;
  homeEpoch?: MessageDraft['homeEpoch'];
}

export function storeContract(name: string, factory: StoreFactory): void {
  describe(`Store contract: ${name}`, () => {
    let opened: Store[];
    let closed: Set<Store>;
    let store: Store;
    let clock: number;
    let serial: number;

    /** A draft in a 1:1 conversation, sent a millisecond after the previous one. */
    function draft(conversationId: string, fromUser: string, clientMsgId: string, options: DraftOptions = {}): MessageDraft {
      const members = directMembers(conversationId);
      assert.ok(members, `${conversationId} is a direct conversation id`);
      serial++;
      clock++;
      return {
        conversationId,
        kind: 'direct',
        members,
        fromUser,
        fromDevice: options.fromDevice ?? `${fromUser}-phone`,
        clientMsgId,
        serverMsgId: `srv-${serial}`,
        text: options.text ?? `message ${serial} from ${fromUser}`,
        sentAtMs: options.sentAtMs ?? clock,
        ...(options.homeEpoch ? { homeEpoch: options.homeEpoch } : {}),
      };
    }

    /** What the store should hold for a fresh draft that got `seq`. */
    function stored(d: MessageDraft, seq: number): ChatMessage {
      return {
        conversationId: d.conversationId,
        seq,
        serverMsgId: d.serverMsgId,
        fromUser: d.fromUser,
        fromDevice: d.fromDevice,
        clientMsgId: d.clientMsgId,
        text: d.text,
        sentAtMs: d.sentAtMs,
      };
    }

    async function appendOne(d: MessageDraft): Promise<AppendResult> {
      const results = await store.append([d]);
      assert.equal(results.length, 1);
      return results[0]!;
    }

    async function close(s: Store): Promise<void> {
      if (closed.has(s)) return;
      closed.add(s);
      await s.close();
    }

    async function reopen(s: Store): Promise<Store> {
      assert.ok(factory.reopen);
      await close(s);
      const next = await factory.reopen(s);
      opened.push(next);
      return next;
    }

    beforeEach(async () => {
      opened = [];
      closed = new Set();
      clock = 1_700_000_000_000;
      serial = 0;
      store = await factory.open();
      opened.push(store);
    });

    afterEach(async () => {
      for (const s of opened) await close(s);
    });

    describe('append', () => {
      test('assigns seq 1, 2, 3, … per conversation and returns the stored messages', async () => {
        const drafts = [1, 2, 3, 4, 5].map((i) => draft(AB, i % 2 ? 'alice' : 'bob', `c${i}`));
        for (const [i, d] of drafts.entries()) {
          assert.deepEqual(await appendOne(d), { message: stored(d, i + 1), duplicate: false });
        }
        assert.deepEqual(await store.after(AB, 0, 100), drafts.map((d, i) => stored(d, i + 1)));
      });

      test('counts each conversation on its own', async () => {
        const results = await store.append([
          draft(AB, 'alice', 'x1'),
          draft(AC, 'alice', 'x2'),
          draft(AB, 'bob', 'x3'),
          draft(BC, 'carol', 'x4'),
          draft(AB, 'alice', 'x5'),
          draft(AC, 'carol', 'x6'),
        ]);
        assert.deepEqual(
          results.map((r) => [r.message.conversationId, r.message.seq, r.duplicate]),
          [[AB, 1, false], [AC, 1, false], [AB, 2, false], [BC, 1, false], [AB, 3, false], [AC, 2, false]],
        );
        assert.deepEqual((await appendOne(draft(BC, 'bob', 'x7'))).message.seq, 2);
      });

      test('a large batch over several conversations leaves no gaps, results in draft order', async () => {
        const conversations = [AB, AC, BC];
        const drafts = Array.from({ length: 300 }, (_, i) => {
          const c = conversations[i % 3]!;
          return draft(c, directMembers(c)![i % 2]!, `big-${i}`);
        });
        const results = await store.append(drafts);
        assert.equal(results.length, drafts.length);
        for (const [i, r] of results.entries()) {
          assert.deepEqual(r, { message: stored(drafts[i]!, Math.floor(i / 3) + 1), duplicate: false });
        }
        for (const [k, c] of conversations.entries()) {
          const messages = await store.after(c, 0, 1000);
          assert.deepEqual(messages.map((m) => m.seq), Array.from({ length: 100 }, (_, i) => i + 1));
          assert.deepEqual(messages.map((m) => m.clientMsgId), Array.from({ length: 100 }, (_, i) => `big-${i * 3 + k}`));
        }
      });

      test('concurrent appends to one conversation still get 1..n', async () => {
        const drafts = Array.from({ length: 30 }, (_, i) => draft(AB, i % 2 ? 'alice' : 'bob', `par-${i}`));
        const results = await Promise.all(drafts.map((d) => store.append([d])));
        const seqs = results.map((r) => r[0]!.message.seq).sort((a, b) => a - b);
        assert.deepEqual(seqs, Array.from({ length: 30 }, (_, i) => i + 1));
        assert.deepEqual((await store.after(AB, 0, 100)).map((m) => m.seq), seqs);
      });

      test('an empty batch stores nothing', async () => {
        assert.deepEqual(await store.append([]), []);
        assert.deepEqual(await store.listForUser('alice'), []);
      });

      test('a batch is atomic: if one draft cannot be stored, none is', async () => {
        const first = draft(AB, 'alice', 'ok-1');
        await appendOne(first);
        // NOT NULL text: a draft no store can write, standing for any failure mid-batch.
        const broken = { ...draft(AB, 'alice', 'broken'), text: null as unknown as string };
        await assert.rejects(store.append([draft(AB, 'bob', 'ok-2'), draft(AC, 'alice', 'ok-3'), broken]));
        assert.deepEqual(await store.after(AB, 0, 100), [stored(first, 1)]);
        assert.deepEqual(await store.after(AC, 0, 100), []);
        assert.deepEqual((await store.listForUser('alice')).map((c) => [c.conversationId, c.lastSeq]), [[AB, 1]]);
        // The rolled-back drafts left no seq used and no idempotency key behind.
        const retry = draft(AB, 'bob', 'ok-2');
        assert.deepEqual(await appendOne(retry), { message: stored(retry, 2), duplicate: false });
      });
    });

    describe('dedupe', () => {
      test('a repeated (fromUser, clientMsgId) returns the original, marked duplicate, and stores nothing', async () => {
        const original = draft(AB, 'alice', 'same', { text: 'original text' });
        await appendOne(original);
        const resend = draft(AB, 'alice', 'same', { text: 'resent text', fromDevice: 'alice-web' });
        assert.deepEqual(await appendOne(resend), { message: stored(original, 1), duplicate: true });
        assert.deepEqual(await store.after(AB, 0, 100), [stored(original, 1)]);
        assert.equal((await store.listForUser('alice'))[0]?.lastSeq, 1);
        const next = draft(AB, 'alice', 'other');
        assert.equal((await appendOne(next)).message.seq, 2, 'a duplicate uses up no seq');
      });

      test('dedupes within one batch', async () => {
        const a = draft(AB, 'alice', 'k1');
        const results = await store.append([a, draft(AB, 'alice', 'k1', { text: 'again' }), draft(AB, 'alice', 'k2')]);
        assert.deepEqual(results[0], { message: stored(a, 1), duplicate: false });
        assert.deepEqual(results[1], { message: stored(a, 1), duplicate: true });
        assert.equal(results[2]?.duplicate, false);
        assert.equal(results[2]?.message.seq, 2);
        assert.equal((await store.after(AB, 0, 100)).length, 2);
      });

      test('the key is per sender: another user may use the same clientMsgId', async () => {
        await appendOne(draft(AB, 'alice', 'shared'));
        const fromBob = await appendOne(draft(AB, 'bob', 'shared'));
        assert.equal(fromBob.duplicate, false);
        assert.equal(fromBob.message.seq, 2);
      });

      test('the key does not depend on the conversation', async () => {
        const original = draft(AB, 'alice', 'once');
        await appendOne(original);
        const elsewhere = await appendOne(draft(AC, 'alice', 'once'));
        assert.deepEqual(elsewhere, { message: stored(original, 1), duplicate: true });
        assert.deepEqual(await store.after(AC, 0, 100), []);
      });

      test('an empty clientMsgId never dedupes', async () => {
        const results = await store.append([draft(AB, 'alice', ''), draft(AB, 'alice', '')]);
        assert.deepEqual(results.map((r) => [r.message.seq, r.duplicate]), [[1, false], [2, false]]);
        assert.deepEqual((await appendOne(draft(AB, 'alice', ''))).message.seq, 3);
        assert.equal((await store.after(AB, 0, 100)).length, 3);
      });
    });

    describe('after and before', () => {
      let drafts: MessageDraft[];
      beforeEach(async () => {
        drafts = Array.from({ length: 25 }, (_, i) => draft(AB, i % 2 ? 'bob' : 'alice', `p${i}`));
        await store.append(drafts);
        await store.append([draft(AC, 'alice', 'elsewhere')]);
      });
      const seqs = (messages: ChatMessage[]) => messages.map((m) => m.seq);
      const span = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

      test('after pages forward in ascending order', async () => {
        assert.deepEqual(seqs(await store.after(AB, 0, 10)), span(1, 10));
        assert.deepEqual(seqs(await store.after(AB, 10, 10)), span(11, 20));
        assert.deepEqual(seqs(await store.after(AB, 20, 10)), span(21, 25));
        assert.deepEqual(await store.after(AB, 25, 10), []);
        assert.deepEqual(seqs(await store.after(AB, 7, 3)), [8, 9, 10]);
        assert.deepEqual(await store.after(AB, 0, 25), drafts.map((d, i) => stored(d, i + 1)));
      });

      test('before pages backward, each page ascending', async () => {
        assert.deepEqual(seqs(await store.before(AB, 0, 10)), span(16, 25));
        assert.deepEqual(seqs(await store.before(AB, 16, 10)), span(6, 15));
        assert.deepEqual(seqs(await store.before(AB, 6, 10)), span(1, 5));
        assert.deepEqual(await store.before(AB, 1, 10), []);
        assert.deepEqual(seqs(await store.before(AB, -1, 3)), [23, 24, 25], 'beforeSeq ≤ 0 means from the latest');
        assert.deepEqual(seqs(await store.before(AB, 1000, 2)), [24, 25]);
        assert.deepEqual(await store.before(AB, 3, 10), [stored(drafts[0]!, 1), stored(drafts[1]!, 2)]);
      });

      test('read only their own conversation', async () => {
        assert.deepEqual((await store.after(AC, 0, 100)).map((m) => m.clientMsgId), ['elsewhere']);
        assert.deepEqual((await store.before(AC, 0, 100)).map((m) => m.clientMsgId), ['elsewhere']);
        assert.deepEqual(await store.after(BC, 0, 100), []);
        assert.deepEqual(await store.before(BC, 0, 100), []);
      });
    });

    describe('conversations', () => {
      test('records the members when a conversation is created', async () => {
        await appendOne(draft(AB, 'alice', 'm1'));
        assert.deepEqual([...(await store.members(AB))].sort(), ['alice', 'bob']);
        assert.equal(await store.isMember(AB, 'alice'), true);
        assert.equal(await store.isMember(AB, 'bob'), true);
        assert.equal(await store.isMember(AB, 'carol'), false);
        assert.deepEqual(await store.members(BC), []);
        assert.equal(await store.isMember(BC, 'bob'), false);
      });

      test('listForUser: the user\'s conversations, most recent activity first', async () => {
        await appendOne(draft(AB, 'alice', 'l1'));
        const toCarol = draft(AC, 'carol', 'l2');
        await appendOne(toCarol);
        const toDave = draft(AD, 'alice', 'l3');
        await appendOne(toDave);
        await appendOne(draft(BC, 'bob', 'l4'));
        const latest = draft(AB, 'bob', 'l5');
        await appendOne(latest);
        assert.deepEqual(await store.listForUser('alice'), [
          { conversationId: AB, kind: 'direct', lastSeq: 2, lastAtMs: latest.sentAtMs, joinedSeq: 1, readSeq: 1 },
          { conversationId: AD, kind: 'direct', lastSeq: 1, lastAtMs: toDave.sentAtMs, joinedSeq: 1, readSeq: 1 },
          { conversationId: AC, kind: 'direct', lastSeq: 1, lastAtMs: toCarol.sentAtMs, joinedSeq: 1, readSeq: 0 },
        ]);
        assert.deepEqual((await store.listForUser('bob')).map((c) => [c.conversationId, c.lastSeq]), [[AB, 2], [BC, 1]]);
        assert.deepEqual((await store.listForUser('dave')).map((c) => c.conversationId), [AD]);
        assert.deepEqual(await store.listForUser('nobody'), []);
      });

      test('conversationPage: listForUser\'s order in pages, each row with a preview of its last message, unread and the peer\'s read mark', async () => {
        await appendOne(draft(AB, 'alice', 'p1'));
        await appendOne(draft(AC, 'carol', 'p2', { text: 'x'.repeat(50) }));
        await appendOne(draft(AC, 'carol', 'p3', { text: 'é'.repeat(30) }));
        await appendOne(draft(AD, 'alice', 'p4'));
        await appendOne(draft(AB, 'bob', 'p5', { text: 'latest' }));
        const all = await store.listForUser('alice');
        const first = await store.conversationPage('alice', 2, undefined, 10);
        assert.deepEqual(first.map((c) => c.conversationId), all.slice(0, 2).map((c) => c.conversationId));
        const ab = first[0]!;
        assert.equal(ab.conversationId, AB);
        assert.equal(ab.lastMessage?.text, 'latest');
        assert.equal(ab.lastTruncated, false);
        assert.equal(ab.unread, 1, 'bob\'s message after alice\'s own');
        assert.equal(ab.peerReadSeq, 2, 'bob wrote seq 2, so he read it');
        const rest = await store.conversationPage('alice', 2, { atMs: first[1]!.lastAtMs, conversationId: first[1]!.conversationId }, 10);
        assert.deepEqual(rest.map((c) => c.conversationId), [AC]);
        const ac = rest[0]!;
        assert.equal(ac.lastMessage?.text, 'é'.repeat(10), 'cut to 10 characters');
        assert.equal(ac.lastTruncated, true);
        assert.equal(ac.lastMessage?.seq, 2);
        assert.equal(ac.unread, 2);
        assert.equal(ac.peerReadSeq, 2);
        assert.deepEqual(await store.conversationPage('alice', 2, { atMs: ac.lastAtMs, conversationId: AC }, 10), []);
        assert.deepEqual(await store.conversationPage('nobody', 10, undefined, 10), []);
      });

      test('unread counts stop at UNREAD_COUNT_MAX', async () => {
        const many = Array.from({ length: UNREAD_COUNT_MAX + 5 }, (_, i) => draft(AB, 'bob', `u${i}`));
        await store.append(many);
        assert.equal(await store.unreadCount(AB, 'alice', 0, many.length), UNREAD_COUNT_MAX);
        assert.equal(await store.unreadCount(AB, 'alice', many.length - 3, many.length), 3);
        const [row] = await store.conversationPage('alice', 1, undefined, 200);
        assert.equal(row!.unread, UNREAD_COUNT_MAX);
      });

      test('writersTo: who has written in a conversation the reader belongs to', async () => {
        await appendOne(draft(AB, 'alice', 'w1'));
        assert.deepEqual([...await store.writersTo('bob', ['alice', 'carol'])], ['alice']);
        assert.deepEqual([...await store.writersTo('alice', ['bob'])], [], 'bob was written to, and wrote nothing');
        await appendOne(draft(AB, 'bob', 'w2'));
        assert.deepEqual([...await store.writersTo('alice', ['bob', 'bob'])], ['bob']);
        assert.deepEqual([...await store.writersTo('carol', ['alice', 'bob'])], []);
        assert.deepEqual([...await store.writersTo('alice', [])], []);
      });
    });

    describe('groups', () => {
      const G = 'g:team';
      let n = 0;
      /** A group event or message draft, sent a millisecond after the previous one. */
      function groupDraft(fromUser: string, extra: Partial<MessageDraft> = {}): MessageDraft {
        n++;
        clock++;
        return {
          conversationId: G, kind: 'group', members: [], fromUser, fromDevice: `${fromUser}-phone`,
          clientMsgId: extra.event ? '' : `g-${n}`, serverMsgId: `gsrv-${n}`, text: extra.event ? '' : `group message ${n}`,
          sentAtMs: clock, ...extra,
        };
      }
      async function createTeam(): Promise<void> {
        await appendOne(groupDraft('alice', {
          event: { type: 'group_created', actor: 'alice', name: 'Team', userIds: ['bob', 'carol'] },
          effect: { op: 'create-group', groupId: 'team', name: 'Team', owner: 'alice', members: ['bob', 'carol'] },
        }));
      }

      test('a batch the store refuses leaves no trace: the new conversation it started is written afresh later', async () => {
        await createTeam();
        const fresh = draft('u:dan:erin', 'dan', 'first');
        const again = groupDraft('alice', {
          event: { type: 'group_created', actor: 'alice', name: 'Team', userIds: ['bob'] },
          effect: { op: 'create-group', groupId: 'team', name: 'Team', owner: 'alice', members: ['bob'] },
        });
        // The second draft creates a group that exists: the whole batch is refused.
        await assert.rejects(store.append([fresh, again]));
        assert.deepEqual(await store.after('u:dan:erin', 0, 10), []);
        const [result] = await store.append([fresh]);
        assert.equal(result!.message.seq, 1);
        assert.equal(result!.duplicate, false);
        assert.deepEqual(await store.after('u:dan:erin', 0, 10), [stored(fresh, 1)]);
        assert.ok(await store.isMember('u:dan:erin', 'erin'));
      });

      test('creating a group stores its event at seq 1, its owner and members', async () => {
        await createTeam();
        const g = await store.group('team');
        assert.ok(g);
        assert.equal(g.name, 'Team');
        assert.equal(g.owner, 'alice');
        assert.equal(g.conversationId, G);
        assert.deepEqual(g.members, [
          { userId: 'alice', role: 'owner', muted: false, readSeq: 1 },
          { userId: 'bob', role: 'member', muted: false, readSeq: 0 },
          { userId: 'carol', role: 'member', muted: false, readSeq: 0 },
        ]);
        const meta = await store.groupMeta('team');
        assert.deepEqual(meta, {
          groupId: 'team', conversationId: G, name: 'Team', owner: 'alice', mutedAll: false, dismissed: false, createdAtMs: g.createdAtMs,
        });
        const [event] = await store.after(G, 0, 10);
        assert.equal(event!.seq, 1);
        assert.deepEqual(event!.event, { type: 'group_created', actor: 'alice', name: 'Team', userIds: ['bob', 'carol'] });
        assert.deepEqual(await store.members(G), ['alice', 'bob', 'carol']);
        assert.equal(await store.group('nope'), undefined);
      });

      test('membership windows: a later member starts at its join event, a removed one ends at its removal', async () => {
        await createTeam();
        await store.append([groupDraft('alice'), groupDraft('bob')]);
        await appendOne(groupDraft('alice', {
          event: { type: 'members_added', actor: 'alice', userIds: ['dave'] }, effect: { op: 'add-members', userIds: ['dave'] },
        }));
        await appendOne(groupDraft('alice', {
          event: { type: 'members_removed', actor: 'alice', userIds: ['carol'] }, effect: { op: 'remove-members', userIds: ['carol'] },
        }));
        await appendOne(groupDraft('bob'));
        const dave = await store.membership(G, 'dave');
        assert.deepEqual(dave, { role: 'member', muted: false, joinedSeq: 4, readSeq: 3 });
        const carol = await store.membership(G, 'carol');
        assert.equal(carol?.leftSeq, 5);
        assert.deepEqual(await store.memberships(G, ['dave', 'carol', 'zed', 'dave']), new Map([['dave', dave], ['carol', carol]]), 'several at once, the same rows');
        assert.deepEqual(await store.memberships(G, []), new Map());
        assert.equal(await store.isMember(G, 'carol'), false);
        assert.equal(await store.isMember(G, 'dave'), true);
        assert.deepEqual(await store.members(G), ['alice', 'bob', 'dave']);
        const carolView = (await store.listForUser('carol')).find((c) => c.conversationId === G)!;
        assert.equal(carolView.lastSeq, 5, 'a removed member sees up to its removal');
        assert.equal(carolView.leftSeq, 5);
        const daveView = (await store.listForUser('dave')).find((c) => c.conversationId === G)!;
        assert.equal(daveView.joinedSeq, 4);
        assert.equal(daveView.lastSeq, 6);
        assert.deepEqual((await store.after(G, 3, 100, 5)).map((m) => m.seq), [4, 5]);
        assert.deepEqual((await store.before(G, 0, 100, 4)).map((m) => m.seq), [4, 5, 6]);
        assert.deepEqual(await store.membersAt(G, 3), ['alice', 'bob', 'carol'], 'dave joined at 4; carol, removed at 5, may see 3');
        assert.deepEqual(await store.membersAt(G, 5), ['alice', 'bob', 'dave'], 'carol is gone by her removal (she gets it as the member it removes)');
        assert.deepEqual(await store.membersAt(G, 6), ['alice', 'bob', 'dave']);
        const [page] = await store.conversationPage('carol', 1, undefined, 200);
        assert.equal(page!.lastSeq, 5, 'a removed member\'s summary ends at its removal');
        assert.equal(page!.lastMessage?.seq, 5);
        assert.equal(page!.groupName, 'Team');
      });

      test('member windows since a seq: every current member, and those whose membership ended after it; with the seq they are as of', async () => {
        await createTeam();
        await appendOne(groupDraft('alice'));
        await appendOne(groupDraft('alice', {
          event: { type: 'members_added', actor: 'alice', userIds: ['dave'] }, effect: { op: 'add-members', userIds: ['dave'] },
        }));
        await appendOne(groupDraft('alice', {
          event: { type: 'members_removed', actor: 'alice', userIds: ['carol'] }, effect: { op: 'remove-members', userIds: ['carol'] },
        }));
        await appendOne(groupDraft('bob'));
        const sorted = (w: { windows: { userId: string }[]; lastSeq: number }) => ({
          lastSeq: w.lastSeq, windows: [...w.windows].sort((a, b) => (a.userId < b.userId ? -1 : 1)),
        });
        assert.deepEqual(sorted(await store.memberWindows(G, 0)), {
          lastSeq: 5,
          windows: [
            { userId: 'alice', joinedSeq: 1 }, { userId: 'bob', joinedSeq: 1 }, { userId: 'carol', joinedSeq: 1, leftSeq: 4 }, { userId: 'dave', joinedSeq: 3 },
          ],
        });
        assert.deepEqual(sorted(await store.memberWindows(G, 3)).windows.map((w) => w.userId), ['alice', 'bob', 'carol', 'dave'], 'carol left at 4');
        assert.deepEqual(sorted(await store.memberWindows(G, 4)).windows.map((w) => w.userId), ['alice', 'bob', 'dave'], 'nothing of carol after 4');
        await appendOne(groupDraft('alice', {
          event: { type: 'members_added', actor: 'alice', userIds: ['carol'] }, effect: { op: 'add-members', userIds: ['carol'] },
        }));
        assert.deepEqual((await store.memberWindows(G, 0)).windows.find((w) => w.userId === 'carol'), { userId: 'carol', joinedSeq: 6 }, 'the latest window only');
        await appendOne(groupDraft('alice', { event: { type: 'dismissed', actor: 'alice' }, effect: { op: 'dismiss' } }));
        assert.deepEqual(sorted(await store.memberWindows(G, 6)), {
          lastSeq: 7,
          windows: [
            { userId: 'alice', joinedSeq: 1, leftSeq: 7 }, { userId: 'bob', joinedSeq: 1, leftSeq: 7 }, { userId: 'carol', joinedSeq: 6, leftSeq: 7 },
            { userId: 'dave', joinedSeq: 3, leftSeq: 7 },
          ],
        });
        assert.deepEqual(await store.memberWindows('g:nope', 0), { lastSeq: 0, windows: [] });
      });

      test(`large groups: those that have had more than ${CHANGE_FANOUT_MAX} members, for good`, async () => {
        await createTeam();
        const crowd = Array.from({ length: CHANGE_FANOUT_MAX }, (_, i) => `m${i}`);
        assert.deepEqual(await store.largeGroups([G, 'g:nope', AB]), new Set());
        await appendOne(groupDraft('alice', {
          event: { type: 'members_added', actor: 'alice', userIds: crowd }, effect: { op: 'add-members', userIds: crowd },
        }));
        assert.deepEqual(await store.largeGroups([G, 'g:nope']), new Set([G]));
        await appendOne(groupDraft('alice', {
          event: { type: 'members_removed', actor: 'alice', userIds: crowd }, effect: { op: 'remove-members', userIds: crowd },
        }));
        assert.deepEqual(await store.largeGroups([G]), new Set([G]), 'still large once it shrank');
        assert.deepEqual(await store.largeGroups([]), new Set());
      });

      test('group counts and contacts through a group', async () => {
        await createTeam();
        assert.deepEqual(await store.groupCounts(['alice', 'bob', 'zed']), new Map([['alice', 1], ['bob', 1]]));
        assert.deepEqual([...await store.writersTo('bob', ['alice', 'carol'])], ['alice'], 'the creator acted in the group; carol did not');
        await appendOne(groupDraft('carol'));
        assert.deepEqual([...await store.writersTo('bob', ['alice', 'carol'])].sort(), ['alice', 'carol']);
        await appendOne(groupDraft('alice', {
          event: { type: 'members_removed', actor: 'alice', userIds: ['carol'] }, effect: { op: 'remove-members', userIds: ['carol'] },
        }));
        assert.deepEqual([...await store.writersTo('bob', ['carol'])], [], 'a contact through a group ends when one leaves it');
        assert.deepEqual(await store.groupCounts(['carol']), new Map());
        await appendOne(groupDraft('alice', {
          event: { type: 'members_added', actor: 'alice', userIds: ['carol'] }, effect: { op: 'add-members', userIds: ['carol'] },
        }));
        assert.deepEqual([...await store.writersTo('bob', ['carol'])], [], 'added back, carol has written nothing in this stay yet');
      });

      test('roles, mutes and dismissal', async () => {
        await createTeam();
        await appendOne(groupDraft('alice', {
          event: { type: 'role_changed', actor: 'alice', userIds: ['bob'], role: 'admin' }, effect: { op: 'set-role', userId: 'bob', role: 'admin' },
        }));
        await appendOne(groupDraft('bob', {
          event: { type: 'mute_changed', actor: 'bob', userIds: ['carol'], muted: true }, effect: { op: 'mute', userId: 'carol', muted: true },
        }));
        await appendOne(groupDraft('alice', {
          event: { type: 'mute_changed', actor: 'alice', muted: true }, effect: { op: 'mute', muted: true },
        }));
        let g = (await store.group('team'))!;
        assert.deepEqual(g.members.map((m) => [m.userId, m.role, m.muted]), [['alice', 'owner', false], ['bob', 'admin', false], ['carol', 'member', true]]);
        assert.equal(g.mutedAll, true);
        await appendOne(groupDraft('alice', { event: { type: 'dismissed', actor: 'alice' }, effect: { op: 'dismiss' } }));
        g = (await store.group('team'))!;
        assert.equal(g.dismissed, true);
        assert.deepEqual(g.members, []);
        assert.equal((await store.membership(G, 'bob'))?.leftSeq, 5);
      });

      test('recall erases the text of the target and records who recalled it', async () => {
        await createTeam();
        await appendOne(groupDraft('bob', { text: 'oops' }));
        await appendOne(groupDraft('alice', {
          event: { type: 'recalled', actor: 'alice', targetSeq: 2 }, effect: { op: 'recall', targetSeq: 2, by: 'alice' },
        }));
        const target = await store.message(G, 2);
        assert.equal(target?.text, '');
        assert.equal(target?.recalledBy, 'alice');
        assert.equal((await store.message(G, 3))?.event?.targetSeq, 2);
        assert.equal(await store.message(G, 99), undefined);
      });

      test('rich content round-trips: payload bytes, mentions, reply and forward; plain text has none', async () => {
        await createTeam();
        const payload = new Uint8Array([0, 1, 2, 254, 255]);
        const card = groupDraft('bob', { text: 'order', content: { type: 'app.order', payload, mentions: ['carol'], mentionAll: true } });
        const reply = groupDraft('carol', { text: 'ok', content: { replyToSeq: 2 } });
        const fwd = groupDraft('alice', { text: 'hi', content: { forward: { conversationId: AB, seq: 1, fromUser: 'bob', sentAtMs: 5 } } });
        await store.append([card, reply, fwd, groupDraft('bob', { text: 'plain' })]);
        const [m2, m3, m4, m5] = await store.after(G, 1, 10);
        assert.deepEqual(m2!.content, { type: 'app.order', payload, mentions: ['carol'], mentionAll: true });
        assert.ok(m2!.content!.payload instanceof Uint8Array);
        assert.deepEqual(m3!.content, { replyToSeq: 2 });
        assert.deepEqual(m4!.content, { forward: { conversationId: AB, seq: 1, fromUser: 'bob', sentAtMs: 5 } });
        assert.equal(m5!.content, undefined);
        assert.equal(m5!.editedAtMs, undefined);
      });

      test('mentions set a member\'s mentioned flag until it reads past them; mention of everyone sets everyone\'s', async () => {
        await createTeam();
        await appendOne(groupDraft('bob', { content: { mentions: ['carol'] } }));
        const flags = async (user: string) => (await store.conversationPage(user, 10, undefined, 50)).find((c) => c.conversationId === G)?.mentioned ?? false;
        assert.deepEqual([await flags('alice'), await flags('bob'), await flags('carol')], [false, false, true]);
        await store.markRead(G, 'carol', 2);
        assert.equal(await flags('carol'), false, 'read past it');
        await appendOne(groupDraft('alice', { content: { mentionAll: true } }));
        assert.deepEqual([await flags('alice'), await flags('bob'), await flags('carol')], [false, true, true], 'the writer has read what it wrote');
      });

      test('an edit replaces text and content and stamps the edit; mentions follow the new version; a recalled message stays recalled', async () => {
        await createTeam();
        await appendOne(groupDraft('bob', { text: 'frist', content: { mentions: ['carol'], replyToSeq: 1 } }));
        await appendOne(groupDraft('bob', {
          event: { type: 'edited', actor: 'bob', targetSeq: 2, text: 'first', content: { type: 'app.note', payload: new Uint8Array([7]), mentions: ['alice'], replyToSeq: 1 } },
          effect: { op: 'edit', targetSeq: 2, text: 'first', content: { type: 'app.note', payload: new Uint8Array([7]), mentions: ['alice'], replyToSeq: 1 } },
        }));
        const edited = (await store.message(G, 2))!;
        const event = (await store.message(G, 3))!;
        assert.equal(edited.text, 'first');
        assert.deepEqual(edited.content, { type: 'app.note', payload: new Uint8Array([7]), mentions: ['alice'], replyToSeq: 1 });
        assert.equal(edited.editedAtMs, event.sentAtMs, 'edited when the event was stored');
        assert.equal(event.event?.type, 'edited');
        assert.equal(event.event?.text, 'first');
        assert.deepEqual(event.event?.content?.payload, new Uint8Array([7]), 'the event keeps the new payload as bytes');
        const flags = async (user: string) => (await store.conversationPage(user, 10, undefined, 50)).find((c) => c.conversationId === G)?.mentioned ?? false;
        assert.deepEqual([await flags('alice'), await flags('carol')], [true, false], 'the mention moved from carol to alice');
        await appendOne(groupDraft('alice', {
          event: { type: 'recalled', actor: 'bob', targetSeq: 2 }, effect: { op: 'recall', targetSeq: 2, by: 'bob' },
        }));
        await appendOne(groupDraft('bob', {
          event: { type: 'edited', actor: 'bob', targetSeq: 2, text: 'back' }, effect: { op: 'edit', targetSeq: 2, text: 'back' },
        }));
        const recalled = (await store.message(G, 2))!;
        assert.deepEqual([recalled.text, recalled.recalledBy, recalled.content, recalled.editedAtMs], ['', 'bob', undefined, undefined]);
        assert.equal(await flags('alice'), false, 'a recalled message mentions no one');
      });

      test('delete for everyone leaves a tombstone: text and content gone, who deleted it, its mentions cleared', async () => {
        await createTeam();
        await appendOne(groupDraft('bob', { text: 'spam', content: { type: 'app.ad', payload: new Uint8Array([1]), mentionAll: true } }));
        await appendOne(groupDraft('alice', {
          event: { type: 'deleted', actor: 'alice', targetSeq: 2 }, effect: { op: 'delete', targetSeq: 2, by: 'alice' },
        }));
        const gone = (await store.message(G, 2))!;
        assert.deepEqual([gone.text, gone.content, gone.deletedBy, gone.recalledBy], ['', undefined, 'alice', undefined]);
        assert.equal((await store.conversationPage('carol', 10, undefined, 50)).find((c) => c.conversationId === G)?.mentioned, undefined);
      });

      test('read cursors: writing marks read, markRead only moves forward, unread counts others\' messages only', async () => {
        await createTeam();
        await store.append([groupDraft('alice'), groupDraft('bob'), groupDraft('alice'), groupDraft('carol')]);
        assert.equal((await store.membership(G, 'bob'))?.readSeq, 3, 'bob wrote seq 3');
        assert.equal(await store.unreadCount(G, 'bob', 3, 5), 2);
        assert.equal(await store.unreadCount(G, 'bob', 0, 5), 3, 'events and own messages do not count');
        assert.equal(await store.markRead(G, 'bob', 5), 5);
        assert.equal(await store.markRead(G, 'bob', 2), 5, 'never back');
        assert.deepEqual(await store.readCursors(G), new Map([['alice', 4], ['bob', 5], ['carol', 5]]));
      });
    });

    describe('delivered cursors', () => {
      /** Conversations with 20 messages each, so cursors up to 20 are real positions. */
      async function fill(...conversations: string[]): Promise<void> {
        for (const c of conversations) {
          const members = directMembers(c)!;
          await store.append(Array.from({ length: 20 }, (_, i) => draft(c, members[i % 2]!, `${c}-fill-${i}`)));
        }
      }
      beforeEach(() => fill(AB, AC));

      test('never pass the conversation\'s last seq, and are not kept for a conversation that does not exist', async () => {
        await store.advanceDelivered([
          { userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 1000 },
          { userId: 'alice', deviceId: 'd1', conversationId: AD, seq: 7 },
        ]);
        assert.deepEqual(await store.delivered('alice', 'd1'), new Map([[AB, 20]]));
      });

      test('advanceDelivered sets cursors that delivered() reads back', async () => {
        await store.advanceDelivered([
          { userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 5 },
          { userId: 'alice', deviceId: 'd1', conversationId: AC, seq: 2 },
        ]);
        assert.deepEqual(await store.delivered('alice', 'd1'), new Map([[AB, 5], [AC, 2]]));
      });

      test('only move forward', async () => {
        await store.advanceDelivered([{ userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 5 }]);
        await store.advanceDelivered([{ userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 3 }]);
        assert.deepEqual(await store.delivered('alice', 'd1'), new Map([[AB, 5]]));
        await store.advanceDelivered([{ userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 8 }]);
        assert.deepEqual(await store.delivered('alice', 'd1'), new Map([[AB, 8]]));
        await store.advanceDelivered([
          { userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 12 },
          { userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 10 },
        ]);
        assert.deepEqual(await store.delivered('alice', 'd1'), new Map([[AB, 12]]), 'the higher of one batch');
      });

      test('are per user and device', async () => {
        await store.advanceDelivered([
          { userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 4 },
          { userId: 'alice', deviceId: 'd2', conversationId: AB, seq: 1 },
          { userId: 'bob', deviceId: 'd1', conversationId: AB, seq: 9 },
        ]);
        assert.deepEqual(await store.delivered('alice', 'd1'), new Map([[AB, 4]]));
        assert.deepEqual(await store.delivered('alice', 'd2'), new Map([[AB, 1]]));
        assert.deepEqual(await store.delivered('bob', 'd1'), new Map([[AB, 9]]));
        assert.deepEqual(await store.delivered('bob', 'd2'), new Map());
        await store.advanceDelivered([]);
        assert.deepEqual(await store.delivered('carol', 'd1'), new Map());
      });

      test('a 1:1 member\'s delivered mark is its devices\' highest cursor: returned when it moves past the other\'s messages, shown to the other side', async () => {
        const bobsMark = async () => (await store.conversationPage('alice', 10, undefined, 200)).find((c) => c.conversationId === AB)?.peerDeliveredSeq;
        assert.equal(await bobsMark(), 0, 'nothing delivered yet');
        assert.deepEqual(await store.advanceDelivered([
          { userId: 'bob', deviceId: 'd1', conversationId: AB, seq: 4 },
          { userId: 'bob', deviceId: 'd2', conversationId: AB, seq: 6 },
          { userId: 'bob', deviceId: 'd1', conversationId: AB, seq: 5 },
        ]), [{ userId: 'bob', conversationId: AB, seq: 6 }], 'one mark per user: the highest of its devices');
        assert.equal(await bobsMark(), 6);
        assert.deepEqual(await store.advanceDelivered([{ userId: 'bob', deviceId: 'd1', conversationId: AB, seq: 6 }]), [], 'a device catching up to the mark does not move it');
        assert.deepEqual(await store.advanceDelivered([{ userId: 'bob', deviceId: 'd3', conversationId: AB, seq: 1000 }]),
          [{ userId: 'bob', conversationId: AB, seq: 20 }], 'never past the last seq');
        assert.equal(await bobsMark(), 20);
        assert.equal((await store.conversationPage('bob', 10, undefined, 200)).find((c) => c.conversationId === AB)?.peerDeliveredSeq, 0, 'alice\'s own mark is apart');
        // Past only one's own messages: the mark moves, but the other side is not told.
        await store.append([draft(AB, 'alice', 'mine-21'), draft(AB, 'alice', 'mine-22'), draft(AB, 'bob', 'yours-23')]);
        assert.deepEqual(await store.advanceDelivered([{ userId: 'bob', deviceId: 'd1', conversationId: AB, seq: 22 }]), [
          { userId: 'bob', conversationId: AB, seq: 22 }], 'past alice\'s 21 and 22');
        assert.deepEqual(await store.advanceDelivered([{ userId: 'bob', deviceId: 'd1', conversationId: AB, seq: 23 }]), [], 'past bob\'s own 23 only: nothing to tell alice');
        assert.equal(await bobsMark(), 23, 'yet the mark moved');
        assert.deepEqual(await store.advanceDelivered([{ userId: 'alice', deviceId: 'd2', conversationId: AB, seq: 23 }]), [
          { userId: 'alice', conversationId: AB, seq: 23 }], 'alice\'s first mark: past bob\'s messages');
      });
    });

    describe('sync: the change index', () => {
      /**
       * What a full sync would read from `from` (every membership when absent): the conversations with something past
       * the cursors given (or past the device's delivered cursors with `delivered`, else from their start), and those
       * answered (named, nothing new).
       */
      async function scan(
        device: string, cursors: Record<string, number> = {}, limit = 100, userId = 'alice',
        options: { from?: SyncPosition; delivered?: boolean; on?: Store } = {},
      ) {
        const r = await (options.on ?? store).syncScan(userId, device, new Map(Object.entries(cursors)), limit, {
          delivered: options.delivered ?? false, ...(options.from ? { from: options.from } : {}),
        });
        const content = r.conversations.filter((c) => c.lastSeq > Math.max(c.from, c.joinedSeq - 1, (c.retainedFromSeq ?? 1) - 1));
        return {
          toRead: content.map((c) => [c.conversationId, c.from, c.lastSeq]),
          answered: r.conversations.filter((c) => !content.includes(c)).map((c) => c.conversationId).sort(),
          cut: r.cut,
          horizon: r.horizon,
        };
      }
      /** A store of its own with this change slack (0: every change written, horizons as close as can be). */
      async function withSlack(changeSlack: number): Promise<Store> {
        const s = await factory.open({ changeSlack });
        opened.push(s);
        return s;
      }
      const at = async (conversationId: string) => (await store.after(conversationId, 0, 1000)).at(-1)?.seq ?? 0;
      let k = 0;
      const group = (conversationId: string, fromUser: string, extra: Partial<MessageDraft> = {}): MessageDraft => {
        k++;
        return {
          conversationId, kind: 'group', members: [], fromUser, fromDevice: `${fromUser}-phone`, clientMsgId: extra.event ? '' : `sync-g-${k}`,
          serverMsgId: `sync-g-srv-${k}`, text: extra.event ? '' : `group ${k}`, sentAtMs: ++clock, ...extra,
        };
      };

      test('from the start: every conversation with something past the cursors given (else from its start), in change order; those given with nothing new are answered', async () => {
        await store.append([draft(AB, 'bob', 's1'), draft(AC, 'carol', 's2'), draft(AD, 'dave', 's3'), draft(AB, 'bob', 's4')]);
        const first = await scan('phone');
        assert.deepEqual(first.toRead.map(([c]) => c).sort(), [AB, AC, AD].sort());
        assert.deepEqual(first.toRead.map(([, from, last]) => [from, last]).sort(), [[0, 1], [0, 1], [0, 2]]);
        assert.equal(first.cut, false);
        // Its next page names where it stands: nothing left to read; the cursors it named are answered.
        const caughtUp = { [AB]: 2, [AC]: 1, [AD]: 1 };
        const second = await scan('phone', caughtUp);
        assert.deepEqual(second.toRead, []);
        assert.deepEqual(second.answered, [AB, AC, AD].sort());
        // A cursor below where the device once stood is read from there (the store keeps no position of its own).
        assert.deepEqual((await scan('phone', { ...caughtUp, [AB]: 0 })).toRead, [[AB, 0, 2]]);
        assert.deepEqual((await scan('tablet', { [AC]: 1 })).toRead.map(([c, from]) => [c, from]).sort(), [[AB, 0], [AD, 0]].sort(),
          'those not named: from their start');
        assert.deepEqual((await scan('phone', {}, 100, 'bob')).toRead, [[AB, 0, 2]], 'the peer reads its own');
      });

      test('in change order: a membership changed later comes later (change slack 0)', async () => {
        const exact = await withSlack(0);
        await exact.append([draft(AB, 'bob', 'o1'), draft(AC, 'carol', 'o2')]);
        await exact.append([draft(AD, 'dave', 'o3')]);
        await exact.append([draft(AB, 'bob', 'o4')]);
        assert.deepEqual((await scan('phone', {}, 100, 'alice', { on: exact })).toRead.map(([c]) => c), [AC, AD, AB]);
      });

      test('delivered: the device\'s delivered cursors stand in for those the request does not give (a client before sync tokens)', async () => {
        await store.append([draft(AB, 'bob', 'd1'), draft(AC, 'carol', 'd2'), draft(AD, 'dave', 'd3')]);
        await store.advanceDelivered([AB, AC, AD].map((conversationId) => ({ userId: 'alice', deviceId: 'laptop', conversationId, seq: 9 })));
        assert.deepEqual((await scan('laptop', {}, 100, 'alice', { delivered: true })).toRead, []);
        assert.deepEqual((await scan('laptop', { [AC]: 0 }, 100, 'alice', { delivered: true })).toRead, [[AC, 0, 1]], 'a cursor given wins');
        assert.equal((await scan('laptop', {}, 100, 'alice', { delivered: false })).toRead.length, 3, 'without: from their start');
        await store.append([draft(AD, 'dave', 'd4')]);
        assert.deepEqual((await scan('laptop', {}, 100, 'alice', { delivered: true })).toRead, [[AD, 1, 2]]);
        const [ab] = await store.syncStates('alice', 'phone', [AB], new Map([[AB, 0]]), { delivered: true });
        assert.deepEqual([ab?.conversationId, ab?.from, ab?.lastSeq, ab?.named], [AB, 0, 1, true]);
        assert.deepEqual((await store.syncStates('alice', 'laptop', [AD, AC, 'g:none'], new Map(), { delivered: true })).map((c) => [c.conversationId, c.from]),
          [[AD, 1], [AC, 1]], 'most recent activity first; the delivered cursor (the last seq when acked); not a member: absent');
        assert.deepEqual((await store.syncStates('alice', 'laptop', [AD, AC], new Map(), { delivered: false })).map((c) => [c.conversationId, c.from]),
          [[AD, 0], [AC, 0]], 'without: from the start');
        assert.equal(await at(AD), 2);
      });

      for (const slack of [0, 2, undefined]) {
        test(`from a horizon a scan handed out: every conversation changed since that scan, whatever committed between (change slack ${slack ?? 'default'})`, async () => {
          const s = slack === undefined ? store : await withSlack(slack);
          const peers = ['p1', 'p2', 'p3', 'p4'].map((p) => directConversationId('alice', p));
          const last = new Map<string, number>();
          const send = async (i: number) => {
            const c = peers[i]!;
            const [r] = await s.append([draft(c, directMembers(c)!.find((u) => u !== 'alice')!, `h-${c}-${serial}`)]);
            last.set(c, r!.message.seq);
          };
          // Scans taken along the way, each with the cursors of a device that read everything it saw.
          const taken: { horizon: number; cursors: Record<string, number> }[] = [];
          const order = [0, 1, 2, 0, 3, 1, 1, 2, 0, 3, 3, 2, 1, 0, 0, 2];
          for (let step = 0; step < order.length; step++) {
            const seen = await scan('phone', Object.fromEntries(last), 100, 'alice', { on: s });
            assert.deepEqual(seen.toRead, [], 'the device has everything it was told of');
            taken.push({ horizon: seen.horizon, cursors: Object.fromEntries(last) });
            await send(order[step]!);
            if (step % 3 === 0) await send(order[(step + 1) % order.length]!);
            for (const t of taken) {
              const got = await scan('phone', t.cursors, 100, 'alice', { on: s, from: { changeNo: t.horizon, conversationId: '' } });
              const changed = peers.filter((c) => (last.get(c) ?? 0) > (t.cursors[c] ?? 0));
              assert.deepEqual(got.toRead.map(([c]) => c).sort(), changed.sort(), `step ${step}, from the horizon ${t.horizon}`);
            }
          }
          for (let i = 1; i < taken.length; i++) assert.ok(taken[i]!.horizon >= taken[i - 1]!.horizon, 'horizons never go back');
        });
      }

      test('from a horizon, with change slack 0: only what changed since is read, not what the device was answered before', async () => {
        const exact = await withSlack(0);
        await exact.append([draft(AB, 'bob', 'x1'), draft(AC, 'carol', 'x2'), draft(AD, 'dave', 'x3')]);
        const caughtUp = { [AB]: 1, [AC]: 1, [AD]: 1 };
        const before = await scan('phone', caughtUp, 100, 'alice', { on: exact });
        assert.deepEqual(before.answered, [AB, AC, AD].sort());
        const from = { changeNo: before.horizon, conversationId: '' };
        const nothing = await scan('phone', caughtUp, 100, 'alice', { on: exact, from });
        assert.deepEqual([nothing.toRead, nothing.answered], [[], []], 'nothing changed since: no row at all');
        await exact.append([draft(AC, 'carol', 'x4')]);
        const one = await scan('phone', caughtUp, 100, 'alice', { on: exact, from });
        assert.deepEqual([one.toRead, one.answered], [[[AC, 1, 2]], []]);
      });

      test('at most limit + 1 conversations with something to read, in change order; cut when there may be more; the next page resumes at the first not read', async () => {
        const exact = await withSlack(0);
        const peers = ['p1', 'p2', 'p3', 'p4', 'p5'];
        for (const p of peers) await exact.append([draft(directConversationId('alice', p), p, `to-alice-${p}`)]);
        const page = await scan('phone', {}, 2, 'alice', { on: exact });
        assert.deepEqual(page.toRead.map(([c]) => c), peers.slice(0, 3).map((p) => directConversationId('alice', p)));
        assert.equal(page.cut, true);
        // The device read the first two: the next page resumes at the third.
        const had = Object.fromEntries(peers.slice(0, 2).map((p) => [directConversationId('alice', p), 1]));
        const third = await exact.syncScan('alice', 'phone', new Map(), 2, { delivered: false });
        const resume = { changeNo: third.conversations[2]!.changeNo, conversationId: third.conversations[2]!.conversationId };
        const next = await scan('phone', had, 2, 'alice', { on: exact, from: resume });
        assert.deepEqual(next.toRead.map(([c]) => c), peers.slice(2, 5).map((p) => directConversationId('alice', p)));
        assert.deepEqual(next.answered, [], 'those before it are not read again');
        assert.equal(next.cut, true);
        const last = await scan('phone', Object.fromEntries(peers.map((p) => [directConversationId('alice', p), 1])), 2, 'alice', { on: exact });
        assert.deepEqual([last.toRead, last.cut], [[], false]);
      });

      test('a group: a member who left stops changing there; one added starts; its join and its leaving are to read', async () => {
        const G = 'g:sync';
        await store.append([group(G, 'alice', {
          event: { type: 'group_created', actor: 'alice', name: 'Sync', userIds: ['bob', 'carol'] },
          effect: { op: 'create-group', groupId: 'sync', name: 'Sync', owner: 'alice', members: ['bob', 'carol'] },
        }), group(G, 'bob')]);
        assert.deepEqual((await scan('d', {}, 100, 'carol')).toRead, [[G, 0, 2]]);
        await store.append([group(G, 'alice', { event: { type: 'members_removed', actor: 'alice', userIds: ['carol'] }, effect: { op: 'remove-members', userIds: ['carol'] } })]);
        assert.deepEqual((await scan('d', { [G]: 2 }, 100, 'carol')).toRead, [[G, 2, 3]], 'her removal');
        assert.deepEqual((await scan('d', { [G]: 3 }, 100, 'carol')).toRead, []);
        await store.append([group(G, 'bob'), group(G, 'alice')]);
        assert.deepEqual((await scan('d', { [G]: 3 }, 100, 'carol')).toRead, [], 'what came after she left is not hers');
        assert.deepEqual((await scan('d', {}, 100, 'dave')).toRead, [], 'dave is not a member');
        await store.append([group(G, 'alice', { event: { type: 'members_added', actor: 'alice', userIds: ['dave'] }, effect: { op: 'add-members', userIds: ['dave'] } })]);
        assert.deepEqual((await scan('d', {}, 100, 'dave')).toRead, [[G, 0, 6]], 'dave from his join (seq 6) on');
        assert.deepEqual((await scan('d', { [G]: 5 }, 100, 'bob')).toRead, [[G, 5, 6]]);
      });

      test('a group, from a horizon: a member removed, and one added, have it to read; one who left earlier does not', async () => {
        const G = 'g:moves';
        const exact = await withSlack(0);
        await exact.append([group(G, 'alice', {
          event: { type: 'group_created', actor: 'alice', name: 'Moves', userIds: ['bob', 'carol'] },
          effect: { op: 'create-group', groupId: 'moves', name: 'Moves', owner: 'alice', members: ['bob', 'carol'] },
        })]);
        await exact.append([group(G, 'alice', { event: { type: 'members_removed', actor: 'alice', userIds: ['bob'] }, effect: { op: 'remove-members', userIds: ['bob'] } })]);
        const h = (await scan('d', {}, 100, 'carol', { on: exact })).horizon;
        await exact.append([group(G, 'alice', { event: { type: 'members_removed', actor: 'alice', userIds: ['carol'] }, effect: { op: 'remove-members', userIds: ['carol'] } }),
          group(G, 'alice', { event: { type: 'members_added', actor: 'alice', userIds: ['dave'] }, effect: { op: 'add-members', userIds: ['dave'] } })]);
        const from = { changeNo: h, conversationId: '' };
        assert.deepEqual((await scan('d', { [G]: 2 }, 100, 'carol', { on: exact, from })).toRead, [[G, 2, 3]], 'her removal');
        assert.deepEqual((await scan('d', {}, 100, 'dave', { on: exact, from })).toRead, [[G, 0, 4]], 'his join');
        const bob = await scan('d', { [G]: 2 }, 100, 'bob', { on: exact, from });
        assert.deepEqual([bob.toRead, bob.answered], [[], []], 'bob left before: nothing changed for him');
      });

      test(`a group of more than ${CHANGE_FANOUT_MAX} members is read at every sync, and its members get what changes there`, async () => {
        const G = 'g:crowd';
        const crowd = Array.from({ length: CHANGE_FANOUT_MAX + 1 }, (_, i) => `m${String(i).padStart(3, '0')}`);
        await store.append([group(G, 'alice', {
          event: { type: 'group_created', actor: 'alice', name: 'Crowd', userIds: crowd },
          effect: { op: 'create-group', groupId: 'crowd', name: 'Crowd', owner: 'alice', members: crowd },
        })]);
        assert.deepEqual((await scan('d', {}, 100, 'm007')).toRead, [[G, 0, 1]]);
        const h = (await scan('d', { [G]: 1 }, 100, 'm007')).horizon;
        const from = { changeNo: h, conversationId: '' };
        assert.deepEqual((await scan('d', { [G]: 1 }, 100, 'm007', { from })).toRead, []);
        assert.deepEqual((await scan('d', { [G]: 1 }, 100, 'm007', { from })).answered, [G], 'read every time: answered whenever named');
        await store.append([group(G, 'm100'), group(G, 'alice')]);
        assert.deepEqual((await scan('d', { [G]: 1 }, 100, 'm007', { from })).toRead, [[G, 1, 3]]);
        await store.append([group(G, 'alice', { event: { type: 'members_removed', actor: 'alice', userIds: ['m007'] }, effect: { op: 'remove-members', userIds: ['m007'] } })]);
        assert.deepEqual((await scan('d', { [G]: 3 }, 100, 'm007', { from })).toRead, [[G, 3, 4]], 'the removal');
        await store.append([group(G, 'alice')]);
        assert.deepEqual((await scan('d', { [G]: 4 }, 100, 'm007', { from })).toRead, [], 'nothing after it');
        assert.deepEqual((await scan('d', { [G]: 4 }, 100, 'm100', { from })).toRead, [[G, 4, 5]]);
      });

      if (factory.reopen) {
        test('a horizon handed out holds across close and reopen', async () => {
          await store.append([draft(AB, 'bob', 'r1'), draft(AC, 'carol', 'r2')]);
          assert.equal((await scan('phone')).toRead.length, 2);
          const h = (await scan('phone', { [AB]: 1, [AC]: 1 })).horizon;
          store = await reopen(store);
          assert.ok((await scan('phone')).horizon >= h, 'not back');
          await store.append([draft(AC, 'carol', 'r3')]);
          assert.deepEqual((await scan('phone', { [AB]: 1, [AC]: 1 }, 100, 'alice', { from: { changeNo: h, conversationId: '' } })).toRead, [[AC, 1, 2]]);
        });
      }
    });

    describe('retention (expireBefore)', () => {
      /** Drafts of one conversation, alternating senders, stamped `at`, `at + 1`, … */
      function run(conversationId: string, count: number, at: number, prefix: string): MessageDraft[] {
        const members = directMembers(conversationId)!;
        return Array.from({ length: count }, (_, i) => draft(conversationId, members[i % 2]!, `${prefix}-${i}`, { sentAtMs: at + i }));
      }
      const OLD = 1_000_000;
      const CUTOFF = 2_000_000;
      const NEW = 3_000_000;
      const seqsOf = (ms: ChatMessage[]) => ms.map((m) => m.seq);
      const stateOf = async (userId: string, conversationId: string) =>
        (await store.listForUser(userId)).find((c) => c.conversationId === conversationId);

      test('removes only what was stored before the cutoff, oldest first; the conversation remembers the first seq it holds', async () => {
        await store.append([...run(AB, 4, OLD, 'ab-old'), ...run(AC, 2, OLD + 10, 'ac-old')]);
        await store.append(run(AB, 3, NEW, 'ab-new'));
        assert.equal(await store.expireBefore(OLD, 100), 0, 'nothing older than the oldest');
        assert.equal((await stateOf('alice', AB))?.retainedFromSeq, undefined, 'no floor before anything expired');
        assert.equal(await store.expireBefore(CUTOFF, 100), 6);
        assert.deepEqual(seqsOf(await store.after(AB, 0, 100)), [5, 6, 7]);
        assert.deepEqual(await store.after(AC, 0, 100), []);
        assert.deepEqual(seqsOf(await store.before(AB, 0, 100)), [5, 6, 7]);
        assert.equal(await store.message(AB, 4), undefined);
        assert.equal((await store.message(AB, 5))?.sentAtMs, NEW);
        const ab = await stateOf('alice', AB);
        assert.deepEqual([ab?.lastSeq, ab?.retainedFromSeq], [7, 5], 'last_seq stays, the floor is the first seq held');
        const ac = await stateOf('carol', AC);
        assert.deepEqual([ac?.lastSeq, ac?.retainedFromSeq], [2, 3], 'all gone: the floor is past the last seq');
        assert.equal(await store.expireBefore(CUTOFF, 100), 0, 'nothing more is due');
        assert.deepEqual(seqsOf(await store.after(AB, 0, 100)), [5, 6, 7]);
      });

      test('bounded by limit: a batch at a time, the oldest first, until fewer than the limit come back', async () => {
        await store.append([...run(AB, 5, OLD, 'ab'), ...run(AC, 5, OLD + 5, 'ac')]);
        await store.append(run(AB, 2, NEW, 'ab-new'));
        const counts = [];
        for (let n = -1; n !== 0;) counts.push(n = await store.expireBefore(CUTOFF, 4));
        assert.deepEqual(counts, [4, 4, 2, 0]);
        assert.deepEqual(seqsOf(await store.after(AB, 0, 100)), [6, 7]);
        assert.deepEqual(await store.after(AC, 0, 100), []);
        assert.equal(await store.expireBefore(CUTOFF, 0), 0, 'a limit of 0 removes nothing');
      });

      test('a batch takes the oldest stored: a conversation loses a prefix of its seqs, whatever the limit', async () => {
        await store.append(run(AB, 3, OLD, 'ab'));
        await store.append(run(AC, 3, OLD + 3, 'ac'));
        await store.append(run(AB, 3, OLD + 6, 'ab-more'));
        assert.equal(await store.expireBefore(CUTOFF, 4), 4);
        assert.deepEqual(seqsOf(await store.after(AB, 0, 100)), [4, 5, 6]);
        assert.deepEqual(seqsOf(await store.after(AC, 0, 100)), [2, 3]);
        assert.equal((await stateOf('alice', AB))?.retainedFromSeq, 4);
        assert.equal((await stateOf('alice', AC))?.retainedFromSeq, 2);
      });

      test('stops at the first stored message not older than the cutoff (a clock ahead holds back those stored after it)', async () => {
        await store.append([draft(AB, 'alice', 'early', { sentAtMs: OLD }), draft(AB, 'bob', 'ahead', { sentAtMs: NEW })]);
        await store.append([draft(AC, 'carol', 'late-but-old', { sentAtMs: OLD + 1 })]);
        assert.equal(await store.expireBefore(CUTOFF, 100), 1);
        assert.deepEqual((await store.after(AB, 0, 100)).map((m) => m.clientMsgId), ['ahead']);
        assert.deepEqual((await store.after(AC, 0, 100)).map((m) => m.clientMsgId), ['late-but-old']);
        assert.equal(await store.expireBefore(NEW + 1, 100), 2, 'once the cutoff passes it, both go');
      });

      test('seqs go on after expiry, also in a conversation emptied by it', async () => {
        await store.append(run(AB, 3, OLD, 'ab'));
        assert.equal(await store.expireBefore(CUTOFF, 100), 3);
        const [next] = await store.append([draft(AB, 'bob', 'after', { sentAtMs: NEW })]);
        assert.equal(next?.message.seq, 4);
        assert.deepEqual(seqsOf(await store.after(AB, 0, 100)), [4]);
        const ab = await stateOf('bob', AB);
        assert.deepEqual([ab?.lastSeq, ab?.retainedFromSeq], [4, 4]);
      });

      test('cursors stay where they were; unread counts count what is held', async () => {
        await store.append(run(AB, 6, OLD, 'ab').map((d) => ({ ...d, fromUser: 'bob', fromDevice: 'bob-phone' })));
        await store.append([draft(AB, 'bob', 'new-1', { sentAtMs: NEW }), draft(AB, 'bob', 'new-2', { sentAtMs: NEW + 1 })]);
        await store.advanceDelivered([
          { userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 2 },
          { userId: 'alice', deviceId: 'd2', conversationId: AB, seq: 7 },
        ]);
        assert.equal(await store.markRead(AB, 'alice', 1), 1);
        const row = async () => (await store.conversationPage('alice', 10, undefined, 200)).find((c) => c.conversationId === AB)!;
        assert.equal((await row()).unread, 7);
        assert.equal(await store.unreadCount(AB, 'alice', 1, 8), 7);

        assert.equal(await store.expireBefore(CUTOFF, 100), 6);
        assert.deepEqual(await store.delivered('alice', 'd1'), new Map([[AB, 2]]), 'a delivered cursor below the floor stays');
        assert.deepEqual(await store.delivered('alice', 'd2'), new Map([[AB, 7]]));
        assert.equal((await store.membership(AB, 'alice'))?.readSeq, 1, 'the read cursor stays');
        assert.equal((await store.membership(AB, 'bob'))?.readSeq, 8);
        const after = await row();
        assert.deepEqual([after.unread, after.readSeq, after.lastSeq, after.lastMessage?.seq], [2, 1, 8, 8]);
        assert.equal(await store.unreadCount(AB, 'alice', 1, 8), 2);
        // Cursors still only move forward, up to the last seq (not to what is held).
        await store.advanceDelivered([{ userId: 'alice', deviceId: 'd1', conversationId: AB, seq: 100 }]);
        assert.deepEqual(await store.delivered('alice', 'd1'), new Map([[AB, 8]]));
        assert.equal(await store.markRead(AB, 'alice', 8), 8);
        assert.equal((await row()).unread, 0);
      });

      test('a conversation with nothing held shows no last message, yet keeps its last seq', async () => {
        await store.append(run(AB, 2, OLD, 'ab'));
        assert.equal(await store.expireBefore(CUTOFF, 100), 2);
        const [row] = await store.conversationPage('alice', 10, undefined, 200);
        assert.deepEqual([row?.conversationId, row?.lastSeq, row?.lastMessage, row?.unread, row?.retainedFromSeq], [AB, 2, undefined, 0, 3]);
      });

      test('idempotency keys go with their messages: a resend of an expired one is stored again; kept ones still dedupe', async () => {
        const [gone, kept] = [draft(AB, 'alice', 'gone', { sentAtMs: OLD }), draft(AB, 'alice', 'kept', { sentAtMs: NEW })];
        await store.append([gone, kept]);
        assert.equal(await store.expireBefore(CUTOFF, 100), 1);
        assert.equal(await store.messageByRequest('alice', 'gone'), undefined);
        const [again, dup] = await store.append([{ ...gone, sentAtMs: NEW + 1 }, { ...kept, text: 'resent' }]);
        assert.deepEqual([again?.duplicate, again?.message.seq], [false, 3]);
        assert.deepEqual(dup, { message: stored(kept, 2), duplicate: true });
      });

      test('group timeline events expire like messages; memberships and the group stay', async () => {
        const G = 'g:club';
        const group = (fromUser: string, sentAtMs: number, extra: Partial<MessageDraft> = {}): MessageDraft => {
          serial++;
          return {
            conversationId: G, kind: 'group', members: [], fromUser, fromDevice: `${fromUser}-phone`,
            clientMsgId: extra.event ? '' : `club-${serial}`, serverMsgId: `club-srv-${serial}`, text: extra.event ? '' : `club ${serial}`,
            sentAtMs, ...extra,
          };
        };
        await store.append([
          group('alice', OLD, {
            event: { type: 'group_created', actor: 'alice', name: 'Club', userIds: ['bob'] },
            effect: { op: 'create-group', groupId: 'club', name: 'Club', owner: 'alice', members: ['bob'] },
          }),
          group('bob', OLD + 1),
          group('alice', OLD + 2, { event: { type: 'members_added', actor: 'alice', userIds: ['carol'] }, effect: { op: 'add-members', userIds: ['carol'] } }),
        ]);
        await store.append([group('carol', NEW)]);
        assert.equal(await store.expireBefore(CUTOFF, 100), 3);
        assert.deepEqual(seqsOf(await store.after(G, 0, 100)), [4]);
        assert.deepEqual(await store.members(G), ['alice', 'bob', 'carol']);
        assert.equal((await store.membership(G, 'carol'))?.joinedSeq, 3, 'carol joined at the (expired) seq 3');
        assert.equal((await store.group('club'))?.owner, 'alice');
        const carol = await stateOf('carol', G);
        assert.deepEqual([carol?.joinedSeq, carol?.lastSeq, carol?.retainedFromSeq], [3, 4, 4]);
      });

      if (factory.reopen) {
        test('the floor survives close and reopen', async () => {
          await store.append([...run(AB, 3, OLD, 'ab'), ...run(AB, 1, NEW, 'ab-new')]);
          assert.equal(await store.expireBefore(CUTOFF, 100), 3);
          const second = await reopen(store);
          assert.equal((await second.listForUser('alice'))[0]?.retainedFromSeq, 4);
          assert.deepEqual(seqsOf(await second.after(AB, 0, 100)), [4]);
          assert.equal((await second.append([draft(AB, 'bob', 'next', { sentAtMs: NEW + 1 })]))[0]?.message.seq, 5);
        });
      }
    });

    describe("replication (another datacenter's copy)", () => {
      /** The home datacenter's store: a second, empty one. */
      async function homeStore(): Promise<Store> {
        const home = await factory.open();
        opened.push(home);
        return home;
      }
      async function everything(s: Store, conversationId: string): Promise<ChatMessage[]> {
        return s.after(conversationId, 0, 1000);
      }

      test('a 1:1 conversation copied at its seqs: same rows, members, head homed where it was made; copied again, nothing changes', async () => {
        const home = await homeStore();
        const results = await home.append([draft(AB, 'alice', 'a1'), draft(AB, 'bob', 'b1'), draft(AB, 'alice', 'a2')]);
        const messages = results.map((r) => r.message);
        assert.deepEqual(await store.replicate(messages.map((message) => ({ message, homeDc: 'a' }))), [true, true, true]);
        assert.deepEqual(await everything(store, AB), await everything(home, AB));
        assert.deepEqual(await store.heads([AB, AC]), new Map([[AB, { lastSeq: 3, homeDc: 'a' }]]));
        assert.deepEqual(await store.members(AB), ['alice', 'bob']);
        assert.equal((await store.membership(AB, 'bob'))?.readSeq, 2, 'a writer has read up to what it wrote');
        assert.deepEqual(await store.replicate(messages.map((message) => ({ message, homeDc: 'a' }))), [false, false, false]);
        assert.deepEqual(await everything(store, AB), await everything(home, AB));
        // One made here is homed here ('').
        await appendOne(draft(AC, 'alice', 'c1'));
        assert.deepEqual((await store.heads([AC])).get(AC), { lastSeq: 1, homeDc: '' });
      });

      test("a group's timeline copied event by event gives the same group, members, windows and recalls as its home", async () => {
        const home = await homeStore();
        const G = 'g:crew';
        let n = 0;
        const change = (fromUser: string, event: MessageDraft['event'], effect: MessageDraft['effect']): MessageDraft => ({
          conversationId: G, kind: 'group', members: [], fromUser, fromDevice: `${fromUser}-phone`, clientMsgId: '',
          serverMsgId: `crew-${++n}`, text: '', sentAtMs: ++clock, event, effect,
        });
        const say = (fromUser: string, text: string): MessageDraft => ({
          conversationId: G, kind: 'group', members: [], fromUser, fromDevice: `${fromUser}-phone`, clientMsgId: `crew-say-${++n}`,
          serverMsgId: `crew-${n}`, text, sentAtMs: ++clock,
        });
        const steps: MessageDraft[] = [
          change('alice', { type: 'group_created', actor: 'alice', name: 'Crew', userIds: ['bob', 'carol'] },
            { op: 'create-group', groupId: 'crew', name: 'Crew', owner: 'alice', members: ['bob', 'carol'] }),
          say('bob', 'hello'),
          change('alice', { type: 'members_added', actor: 'alice', userIds: ['dave'] }, { op: 'add-members', userIds: ['dave'] }),
          say('dave', 'hi all'),
          change('alice', { type: 'recalled', actor: 'bob', targetSeq: 2 }, { op: 'recall', targetSeq: 2, by: 'bob' }),
          change('alice', { type: 'role_changed', actor: 'alice', userIds: ['carol'], role: 'admin' }, { op: 'set-role', userId: 'carol', role: 'admin' }),
          change('carol', { type: 'mute_changed', actor: 'carol', userIds: ['dave'], muted: true }, { op: 'mute', userId: 'dave', muted: true }),
          change('alice', { type: 'mute_changed', actor: 'alice', muted: true }, { op: 'mute', muted: true }),
          change('alice', { type: 'members_removed', actor: 'alice', userIds: ['bob'] }, { op: 'remove-members', userIds: ['bob'] }),
          say('carol', 'bye bob'),
          change('alice', { type: 'members_added', actor: 'alice', userIds: ['bob'] }, { op: 'add-members', userIds: ['bob'] }),
        ];
        const copied: ChatMessage[] = [];
        for (const step of steps) copied.push((await home.append([step]))[0]!.message);
        // Copied in two batches, the second repeating the end of the first.
        await store.replicate(copied.slice(0, 6).map((message) => ({ message, homeDc: 'a' })));
        await store.replicate(copied.slice(4).map((message) => ({ message, homeDc: 'a' })));
        assert.deepEqual(await everything(store, G), await everything(home, G));
        assert.equal((await store.message(G, 2))?.recalledBy, 'bob');
        assert.deepEqual(await store.group('crew'), await home.group('crew'));
        for (const user of ['alice', 'bob', 'carol', 'dave']) {
          assert.deepEqual(await store.membership(G, user), await home.membership(G, user), user);
          assert.deepEqual(await store.pastWindows(G, user), await home.pastWindows(G, user), user);
        }
        assert.deepEqual(await store.membersAt(G, 10), await home.membersAt(G, 10));
        assert.deepEqual((await store.heads([G])).get(G), { lastSeq: 11, homeDc: 'a' });
      });

      test('content, edits and deletes are copied as their home applied them', async () => {
        const home = await homeStore();
        const payload = new Uint8Array([9, 8, 7]);
        const steps: MessageDraft[] = [
          { ...draft(AB, 'alice', 'r1'), content: { type: 'app.card', payload, mentions: ['bob'] } },
          { ...draft(AB, 'bob', 'r2'), content: { replyToSeq: 1 } },
          { ...draft(AB, 'alice', ''), text: '', event: { type: 'edited', actor: 'alice', targetSeq: 1, text: 'card v2', content: { type: 'app.card', payload } },
            effect: { op: 'edit', targetSeq: 1, text: 'card v2', content: { type: 'app.card', payload } } },
          { ...draft(AB, 'bob', ''), text: '', event: { type: 'deleted', actor: 'bob', targetSeq: 2 }, effect: { op: 'delete', targetSeq: 2, by: 'bob' } },
        ];
        const copied: ChatMessage[] = [];
        for (const step of steps) copied.push((await home.append([step]))[0]!.message);
        await store.replicate(copied.map((message) => ({ message, homeDc: 'a' })));
        assert.deepEqual(await everything(store, AB), await everything(home, AB));
        const [first, second] = await everything(store, AB);
        assert.deepEqual([first!.text, first!.editedAtMs, first!.content], ['card v2', copied[2]!.sentAtMs, { type: 'app.card', payload }]);
        assert.deepEqual([second!.text, second!.deletedBy], ['', 'bob']);
        // A copy made after the changes (the home's rows as they are now) holds them too.
        const late = await homeStore();
        await late.replicate((await everything(home, AB)).map((message) => ({ message, homeDc: 'a' })));
        assert.deepEqual(await everything(late, AB), await everything(home, AB));
      });

      test('who serves a datacenter\'s homes: the highest epoch wins, a lower one is ignored', async () => {
        assert.deepEqual(await store.dcHomes(), new Map());
        const first = { servedBy: 'b', epoch: 1, state: 'serving' as const, changedAtMs: 10 };
        assert.deepEqual(await store.putDcHome('a', first), first);
        assert.deepEqual(await store.putDcHome('a', { servedBy: 'c', epoch: 1, state: 'serving', changedAtMs: 11 }), first, 'same epoch: kept');
        const back = { servedBy: 'a', epoch: 2, state: 'returning' as const, changedAtMs: 12 };
        assert.deepEqual(await store.putDcHome('a', back), back);
        assert.deepEqual(await store.dcHomes(), new Map([['a', back]]));
      });

      test('a catch-up: what changed since a time, and a diverged tail set aside for the served copy', async () => {
        const served = await homeStore();
        const common = (await served.append([draft(AB, 'alice', 'a1', { sentAtMs: 1000 }), draft(AB, 'bob', 'b1', { sentAtMs: 1001 })])).map((r) => r.message);
        await store.replicate(common.map((message) => ({ message, homeDc: 'a' })));
        // Each side wrote seq 3 and 4 on its own (the loss window of a takeover).
        await store.append([draft(AB, 'alice', 'lost-1', { sentAtMs: 2000 }), draft(AB, 'alice', 'lost-2', { sentAtMs: 2001 })]);
        await served.append([draft(AB, 'bob', 'won-1', { sentAtMs: 3000 }), draft(AB, 'bob', 'won-2', { sentAtMs: 3001 })]);
        await appendOne(draft(AC, 'alice', 'old', { sentAtMs: 500 }));
        assert.deepEqual((await store.changedSince(1500, 10)).map((c) => [c.id, c.lastSeq]), [[AB, 4]]);
        assert.deepEqual((await served.changedSince(2500, 10)).map((c) => [c.id, c.lastSeq]), [[AB, 4]]);
        assert.equal(await store.orphanFrom(AB, 3, 5000), 2);
        assert.deepEqual((await store.heads([AB])).get(AB)?.lastSeq, 2);
        const won = await served.after(AB, 2, 10);
        await store.replicate(won.map((message) => ({ message, homeDc: 'a' })));
        assert.deepEqual(await store.after(AB, 0, 10), await served.after(AB, 0, 10));
        assert.equal((await store.messageByRequest('alice', 'lost-1')), undefined, 'an orphan is never served');
      });

      const NONE = { reads: [], cursors: [], revocations: [] };
      const kinds = (c: MarkChanges) => ({ reads: c.reads, cursors: c.cursors, revocations: c.revocations });
      test('read marks, delivered cursors and revocations: what changed here since a time, merged forward only elsewhere, never copied back', async () => {
        const home = await homeStore();
        const copied = (await home.append([draft(AB, 'alice', 'a1'), draft(AB, 'bob', 'b1'), draft(AB, 'bob', 'b2')])).map((r) => r.message);
        await store.replicate(copied.map((message) => ({ message, homeDc: 'a' })));
        const before = Date.now();
        assert.deepEqual(kinds(await home.marksSince(before, 100)), NONE, 'nothing changed yet');
        await home.markRead(AB, 'alice', 3);
        await home.markRead(AB, 'alice', 2); // back: no change
        await home.advanceDelivered([{ userId: 'alice', deviceId: 'phone', conversationId: AB, seq: 3 }]);
        await home.putRevocation('bob', '', 12_345);
        await home.putRevocation('bob', '', 100); // earlier: the later stands
        const changes = await home.marksSince(before, 100);
        assert.deepEqual(changes.reads.map((r) => [r.conversationId, r.userId, r.seq]), [[AB, 'alice', 3]]);
        assert.deepEqual(changes.cursors.map((c) => [c.userId, c.deviceId, c.conversationId, c.seq]), [['alice', 'phone', AB, 3]]);
        assert.deepEqual(changes.revocations.map((r) => [r.userId, r.deviceId, r.beforeMs]), [['bob', '', 12_345]]);
        for (const c of [...changes.reads, ...changes.cursors, ...changes.revocations]) assert.ok(c.atMs >= before - 5000, 'stamped with the time of the change');
        assert.deepEqual((await home.marksSince(Date.now() + 60_000, 100)).reads, [], 'nothing after a later time');
        assert.equal((await home.marksSince(before, 0)).reads.length, 0, 'bounded by limit');
        const settled = await home.marksSince(before, 100, 60_000);
        assert.deepEqual(kinds(settled), NONE, 'none settled a minute ago');
        assert.ok(Math.abs(settled.untilMs - (Date.now() - 60_000)) < 5000, 'until: now less the settling time, on the store\'s clock');

        // Merged elsewhere: forward, and not stamped there (nothing goes back).
        const merged = await store.mergeMarks(changes);
        assert.deepEqual(merged.moved.map((r) => [r.conversationId, r.userId, r.seq]), [[AB, 'alice', 3]]);
        assert.deepEqual(merged.missing, { reads: [], cursors: [] });
        assert.equal((await store.membership(AB, 'alice'))?.readSeq, 3);
        assert.deepEqual(await store.delivered('alice', 'phone'), new Map([[AB, 3]]));
        assert.deepEqual(kinds(await store.marksSince(before, 100)), NONE, 'a copy is not a change made here');
        assert.deepEqual((await store.mergeMarks(changes)).moved, [], 'merged again: nothing moves');
        await store.mergeMarks({ reads: [{ conversationId: AB, userId: 'alice', seq: 1, atMs: 0 }], cursors: [{ userId: 'alice', deviceId: 'phone', conversationId: AB, seq: 1, atMs: 0 }], revocations: [] });
        assert.equal((await store.membership(AB, 'alice'))?.readSeq, 3, 'never back');
        assert.deepEqual(await store.delivered('alice', 'phone'), new Map([[AB, 3]]), 'never back');
        // A mark of a member or conversation not held here (not copied yet) is said missing, and nothing is written for it.
        const early = { reads: [{ conversationId: AC, userId: 'alice', seq: 5, atMs: 7 }], cursors: [{ userId: 'alice', deviceId: 'phone', conversationId: AC, seq: 5, atMs: 7 }], revocations: [] };
        assert.deepEqual(await store.mergeMarks(early), { moved: [], missing: { reads: early.reads, cursors: early.cursors } });
        assert.equal((await store.delivered('alice', 'phone')).get(AC), undefined);
        // Revocations merge to the later time, not stamped; one made here is.
        await store.mergeMarks({ reads: [], cursors: [], revocations: [{ userId: 'bob', deviceId: '', beforeMs: 99, atMs: 0 }] });
        assert.deepEqual(kinds(await store.marksSince(before, 100)), NONE);
        await store.putRevocation('carol', 'tab', 777);
        assert.deepEqual((await store.marksSince(before, 100)).revocations.map((r) => [r.userId, r.deviceId, r.beforeMs]), [['carol', 'tab', 777]]);
      });

      test('a datacenter\'s own state (the sync service\'s progress): absent, then the last value put', async () => {
        assert.equal(await store.dcState('marks:b'), undefined);
        await store.putDcState('marks:b', '100');
        await store.putDcState('marks:b', '200');
        assert.equal(await store.dcState('marks:b'), '200');
      });

      test('an append under an older record of who serves its home writes nothing and is handed again; under the stored one, it is written', async () => {
        await appendOne(draft(AB, 'alice', 'before-any-record', { homeEpoch: { dc: 'a', epoch: 0 } }));
        await store.putDcHome('a', { servedBy: 'b', epoch: 1, state: 'serving', changedAtMs: 1 });
        await assert.rejects(store.append([draft(AB, 'alice', 'stale', { homeEpoch: { dc: 'a', epoch: 0 } }), draft(AC, 'alice', 'other')]),
          (err: unknown) => isUnavailable(err));
        assert.equal(await store.messageByRequest('alice', 'stale'), undefined, 'nothing of the batch written');
        assert.equal(await store.messageByRequest('alice', 'other'), undefined);
        const [ok] = await store.append([draft(AB, 'alice', 'current', { homeEpoch: { dc: 'a', epoch: 1 } })]);
        assert.equal(ok!.message.seq, 2);
        await appendOne(draft(AB, 'alice', 'unfenced'));
      });

      test('after a copy, writes here go on from the copied head (the home moved here)', async () => {
        const home = await homeStore();
        const copied = (await home.append([draft(AB, 'alice', 'a1'), draft(AB, 'bob', 'b1')])).map((r) => r.message);
        await store.replicate(copied.map((message) => ({ message, homeDc: 'a' })));
        const [next] = await store.append([draft(AB, 'alice', 'a2')]);
        assert.equal(next!.message.seq, 3);
        assert.equal((await store.append([draft(AB, 'alice', 'a1')]))[0]!.duplicate, true, 'a copied idempotency key answers a resend');
      });
    });

    describe('reactions', () => {
      const LIMITS = { emojisPerMessage: 3, perUser: 2 };
      test('add, again, remove; counts and the first users per emoji in the order first used; limits; gone with the message', async () => {
        await store.append([draft(AB, 'alice', 'r1'), draft(AB, 'bob', 'r2')]);
        assert.equal(await store.react(AB, 1, 'bob', '👍', true, 10, LIMITS), 'changed');
        assert.equal(await store.react(AB, 1, 'bob', '👍', true, 11, LIMITS), 'unchanged', 'once is enough');
        assert.equal(await store.react(AB, 1, 'alice', '👍', true, 12, LIMITS), 'changed');
        assert.equal(await store.react(AB, 1, 'alice', '❤️', true, 13, LIMITS), 'changed');
        assert.equal(await store.react(AB, 1, 'alice', '😂', true, 14, LIMITS), 'too-many', 'alice has put 2 on it');
        assert.equal(await store.react(AB, 1, 'bob', '😂', true, 15, LIMITS), 'changed');
        assert.equal(await store.react(AB, 1, 'bob', '🎉', true, 16, LIMITS), 'too-many', 'a 4th emoji on the message');
        assert.equal(await store.react(AB, 2, 'alice', '🎉', true, 17, LIMITS), 'changed');
        assert.deepEqual(await store.reactions(AB, [1, 2, 3], 1), new Map([
          [1, [{ emoji: '👍', count: 2, users: ['bob'] }, { emoji: '❤️', count: 1, users: ['alice'] }, { emoji: '😂', count: 1, users: ['bob'] }]],
          [2, [{ emoji: '🎉', count: 1, users: ['alice'] }]],
        ]));
        assert.equal(await store.react(AB, 1, 'bob', '👍', false, 18, LIMITS), 'changed');
        assert.equal(await store.react(AB, 1, 'bob', '👍', false, 19, LIMITS), 'unchanged');
        assert.equal(await store.react(AB, 1, 'bob', '😂', false, 20, LIMITS), 'changed');
        assert.deepEqual((await store.reactions(AB, [1], 20)).get(1), [{ emoji: '👍', count: 1, users: ['alice'] }, { emoji: '❤️', count: 1, users: ['alice'] }]);
        await appendOne({ ...draft(AB, 'alice', ''), text: '', event: { type: 'recalled', actor: 'alice', targetSeq: 1 }, effect: { op: 'recall', targetSeq: 1, by: 'alice' } });
        assert.deepEqual(await store.reactions(AB, [1, 2], 20), new Map([[2, [{ emoji: '🎉', count: 1, users: ['alice'] }]]]), 'a recalled message keeps none');
      });
    });

    describe('hidden (delete for me)', () => {
      test('a hide event records the hide for its user only; a copy in another datacenter records it too', async () => {
        await store.append([draft(AB, 'alice', 'h1'), draft(AB, 'bob', 'h2')]);
        const self = directConversationId('bob', 'bob');
        const hide: MessageDraft = {
          conversationId: self, kind: 'direct', members: ['bob'], fromUser: 'bob', fromDevice: 'bob-phone', clientMsgId: 'op:hide-1',
          serverMsgId: 'srv-hide', text: '', sentAtMs: ++clock,
          event: { type: 'hidden', actor: 'bob', targetSeq: 1, targetConversationId: AB }, effect: { op: 'hide', userId: 'bob', conversationId: AB, targetSeq: 1 },
        };
        const [stored] = await store.append([hide]);
        assert.deepEqual(stored!.message.event, { type: 'hidden', actor: 'bob', targetSeq: 1, targetConversationId: AB });
        assert.deepEqual([...await store.hiddenSeqs('bob', AB, [1, 2])], [1]);
        assert.deepEqual([...await store.hiddenSeqs('alice', AB, [1, 2])], []);
        const copy = await factory.open();
        opened.push(copy);
        await copy.replicate([...await store.after(AB, 0, 10), ...await store.after(self, 0, 10)].map((message) => ({ message, homeDc: 'a' })));
        assert.deepEqual([...await copy.hiddenSeqs('bob', AB, [1, 2])], [1]);
      });
    });

    describe('blocks', () => {
      test('block, list, unblock; a limit on how many; who blocks whom', async () => {
        assert.deepEqual(await store.blocked('alice', 10), []);
        assert.equal(await store.setBlocked('alice', 'mallory', true, 2), true);
        assert.equal(await store.setBlocked('alice', 'mallory', true, 2), true, 'blocking again is done');
        assert.equal(await store.setBlocked('alice', 'eve', true, 2), true);
        assert.equal(await store.setBlocked('alice', 'trudy', true, 2), false, 'a third is over the limit');
        assert.deepEqual(await store.blocked('alice', 10), ['eve', 'mallory']);
        assert.deepEqual(await store.blocked('alice', 1), ['eve'], 'the read is bounded');
        await store.setBlocked('bob', 'mallory', true, 2);
        assert.deepEqual([...await store.blockersOf('mallory', ['alice', 'bob', 'carol'])].sort(), ['alice', 'bob']);
        assert.equal(await store.setBlocked('alice', 'mallory', false, 2), true);
        assert.deepEqual(await store.blocked('alice', 10), ['eve']);
        assert.deepEqual([...await store.blockersOf('mallory', ['alice', 'bob'])], ['bob']);
        assert.equal(await store.setBlocked('alice', 'trudy', true, 2), true, 'room again after an unblock');
      });
    });

    describe('files, search, push notifications', () => {
      const file = (id: string, ownerId: string): FileRecord => ({
        id, ownerId, name: `${id}.png`, mime: 'image/png', size: 10, sha256: 'ab'.repeat(32), width: 4, height: 3, hasPreview: true, createdAtMs: clock,
      });
      const G = 'g:files';
      let n = 0;
      function inGroup(fromUser: string, extra: Partial<MessageDraft> = {}): MessageDraft {
        n++;
        clock++;
        return {
          conversationId: G, kind: 'group', members: [], fromUser, fromDevice: `${fromUser}-phone`,
          clientMsgId: extra.event ? '' : `f-${n}`, serverMsgId: `fsrv-${n}`, text: extra.event ? '' : `group message ${n}`, sentAtMs: clock, ...extra,
        };
      }
      const withFile = (id: string) => ({ attachments: [{ fileId: id, name: `${id}.png`, mime: 'image/png', size: 10, width: 4, height: 3, hasPreview: true }] });

      test('a file: its record, its uploader, and who may read a message holding it (membership windows, recalls)', async () => {
        await store.putFile(file('f1', 'alice'));
        await store.putFile(file('f2', 'alice'));
        assert.deepEqual((await store.files(['f1', 'nope'])).get('f1'), file('f1', 'alice'));
        assert.equal((await store.files(['nope'])).size, 0);
        assert.equal(await store.mayReadFile('alice', 'f1'), true, 'the uploader');
        assert.equal(await store.mayReadFile('bob', 'f1'), false, 'not sent anywhere yet');
        await appendOne(inGroup('alice', {
          event: { type: 'group_created', actor: 'alice', name: 'F', userIds: ['bob'] },
          effect: { op: 'create-group', groupId: 'files', name: 'F', owner: 'alice', members: ['bob'] },
        }));
        const sent = await appendOne({ ...inGroup('alice'), content: withFile('f1') });
        assert.equal(await store.mayReadFile('bob', 'f1'), true, 'bob may read the message holding it');
        assert.equal(await store.mayReadFile('carol', 'f1'), false);
        await appendOne(inGroup('alice', { event: { type: 'members_removed', actor: 'alice', userIds: ['bob'] }, effect: { op: 'remove-members', userIds: ['bob'] } }));
        await appendOne({ ...inGroup('alice'), content: withFile('f2') });
        assert.equal(await store.mayReadFile('bob', 'f1'), true, 'sent before his removal');
        assert.equal(await store.mayReadFile('bob', 'f2'), false, 'sent after it');
        await appendOne(inGroup('alice', {
          event: { type: 'recalled', actor: 'alice', targetSeq: sent.message.seq }, effect: { op: 'recall', targetSeq: sent.message.seq, by: 'alice' },
        }));
        assert.equal(await store.mayReadFile('bob', 'f1'), false, 'its message recalled');
        assert.equal(await store.mayReadFile('alice', 'f1'), true);
        const uploads = await store.uploadsSince('alice', 0);
        assert.deepEqual(uploads, { count: 2, bytes: 20 });
        assert.deepEqual(await store.uploadsSince('alice', clock + 1), { count: 0, bytes: 0 });
      });

      test('search: words and prefixes, only what the user may read, ranked; edits, recalls, deletes and hides followed', async () => {
        const a = await appendOne({ ...draft(AB, 'alice', 's1'), text: 'Meeting about the budget tomorrow' });
        const b = await appendOne({ ...draft(AB, 'bob', 's2'), text: 'budget budget budget' });
        await appendOne({ ...draft(AC, 'alice', 's3'), text: 'budget for carol' });
        const index = (results: AppendResult[]) => store.indexForSearch(results.map((r) => ({ conversationId: r.message.conversationId, seq: r.message.seq })));
        await store.indexForSearch([{ conversationId: AB, seq: 1 }, { conversationId: AB, seq: 2 }, { conversationId: AC, seq: 1 }]);
        await store.indexForSearch([{ conversationId: AB, seq: 1 }]); // again: no second entry
        const search = async (userId: string, words: string[], conversationId?: string) =>
          (await store.search({ userId, words, offset: 0, limit: 10, ...(conversationId ? { conversationId } : {}) })).map((m) => m.text);
        assert.deepEqual(await search('bob', ['budget']), ['budget budget budget', 'Meeting about the budget tomorrow'], 'the better match first');
        assert.deepEqual(await search('bob', ['meet']), ['Meeting about the budget tomorrow'], 'a prefix');
        assert.deepEqual(await search('bob', ['budget', 'tomorrow']), ['Meeting about the budget tomorrow']);
        assert.deepEqual(await search('carol', ['budget']), ['budget for carol']);
        assert.deepEqual(await search('alice', ['budget'], AC), ['budget for carol']);
        assert.deepEqual(await store.search({ userId: 'bob', words: ['budget'], offset: 1, limit: 1 }).then((r) => r.map((m) => m.seq)), [a.message.seq]);

        await index([await appendOne({
          ...draft(AB, 'alice', ''), text: '', event: { type: 'edited', actor: 'alice', targetSeq: a.message.seq, text: 'Lunch instead' },
          effect: { op: 'edit', targetSeq: a.message.seq, text: 'Lunch instead' },
        })]);
        await store.indexForSearch([{ conversationId: AB, seq: a.message.seq }]);
        assert.deepEqual(await search('bob', ['meeting']), [], 'the old text is gone');
        assert.deepEqual(await search('bob', ['lunch']), ['Lunch instead']);
        await appendOne({
          ...draft(AB, 'bob', ''), text: '', event: { type: 'hidden', actor: 'bob', targetSeq: a.message.seq, targetConversationId: AB },
          effect: { op: 'hide', userId: 'bob', conversationId: AB, targetSeq: a.message.seq },
        });
        assert.deepEqual(await search('bob', ['lunch']), [], 'hidden by bob');
        assert.deepEqual(await search('alice', ['lunch']), ['Lunch instead'], 'not by alice');
        await store.setBlocked('alice', 'bob', true, 10);
        assert.deepEqual(await search('alice', ['budget']), ['budget for carol'], 'alice blocks bob: his messages are left out');
        await appendOne({
          ...draft(AB, 'bob', ''), text: '', event: { type: 'deleted', actor: 'bob', targetSeq: b.message.seq }, effect: { op: 'delete', targetSeq: b.message.seq, by: 'bob' },
        });
        await store.indexForSearch([{ conversationId: AB, seq: b.message.seq }]);
        assert.deepEqual(await search('bob', ['budget']), [], 'deleted');
      });

      test('push devices: one token per device, a token moves to whoever registers it last, at most N per user', async () => {
        await store.putPushDevice({ userId: 'bob', deviceId: 'phone', platform: 'apns', token: 't1', updatedAtMs: 1 }, 2);
        await store.putPushDevice({ userId: 'bob', deviceId: 'phone', platform: 'apns', token: 't2', updatedAtMs: 2 }, 2);
        await store.putPushDevice({ userId: 'bob', deviceId: 'tablet', platform: 'fcm', token: 't3', updatedAtMs: 3 }, 2);
        assert.deepEqual((await store.pushDevices(['bob'])).get('bob')?.map((d) => [d.deviceId, d.platform, d.token]), [['tablet', 'fcm', 't3'], ['phone', 'apns', 't2']]);
        await store.putPushDevice({ userId: 'bob', deviceId: 'watch', platform: 'apns', token: 't4', updatedAtMs: 4 }, 2);
        assert.deepEqual((await store.pushDevices(['bob'])).get('bob')?.map((d) => d.deviceId), ['watch', 'tablet'], 'the least recent dropped');
        await store.putPushDevice({ userId: 'carol', deviceId: 'phone', platform: 'fcm', token: 't3', updatedAtMs: 5 }, 2);
        assert.deepEqual((await store.pushDevices(['bob', 'carol'])).get('bob')?.map((d) => d.deviceId), ['watch'], 't3 is carol\'s now');
        await store.removePushDevice('bob', 'watch', 'other-token');
        assert.equal((await store.pushDevices(['bob'])).get('bob')?.length, 1, 'only while it still has that token');
        await store.removePushDevice('bob', 'watch');
        assert.equal((await store.pushDevices(['bob'])).has('bob'), false);
      });

      test('notifications: a burst collapses, each message is notified once, newer messages wait for the next; mutes', async () => {
        await store.setNotifyMuted('carol', AB, true);
        assert.deepEqual([...await store.notifyMuted(AB, ['bob', 'carol'])], ['carol']);
        await store.setNotifyMuted('carol', AB, false);
        assert.equal((await store.notifyMuted(AB, ['carol'])).size, 0);

        const q = (seq: number, due: number) => ({ userId: 'bob', conversationId: AB, seq, fromUser: 'alice', dueAtMs: due });
        await store.queueNotifications([q(1, 100), q(2, 150)]);
        await store.queueNotifications([q(2, 150), q(3, 200)]); // 2 again (handed twice): counted once
        assert.deepEqual(await store.claimNotifications(99, 10, 1000), [], 'not due before its first message\'s time');
        const [n1, ...none] = await store.claimNotifications(100, 10, 1000);
        assert.deepEqual(none, []);
        assert.deepEqual(n1, { userId: 'bob', conversationId: AB, firstSeq: 1, lastSeq: 3, count: 3, fromUser: 'alice', dueAtMs: 100 });
        assert.deepEqual(await store.claimNotifications(500, 10, 1000), [], 'claimed: nobody else takes it until its lease ends');
        await store.queueNotifications([q(4, 600)]); // while it is being sent
        await store.finishNotification(n1!, 700);
        await store.queueNotifications([q(2, 800), q(3, 800)]); // already notified: ignored
        const [n2] = await store.claimNotifications(5000, 10, 1000);
        assert.deepEqual(n2, { userId: 'bob', conversationId: AB, firstSeq: 4, lastSeq: 4, count: 1, fromUser: 'alice', dueAtMs: 700 });
        await store.finishNotification(n2!, 9000);
        assert.deepEqual(await store.claimNotifications(10_000, 10, 1000), []);
        await store.queueNotifications([q(5, 10_000)]);
        const [n3] = await store.claimNotifications(10_000, 10, 1000);
        assert.equal(n3?.lastSeq, 5);
        assert.deepEqual(await store.claimNotifications(10_500, 10, 1000), []);
        assert.equal((await store.claimNotifications(11_001, 10, 1000))[0]?.lastSeq, 5, 'a claim that ran out is taken again');
      });
    });

    describe('risk', () => {
      const audit = (userId: string, i: number): RiskAuditDraft => ({
        atMs: 1_700_000_000_000 + i, userId, rule: `rule-${i % 3}`, action: i % 2 ? 'block' : 'flag', detail: JSON.stringify({ i }),
      });

      test('rules: none at first, then each put gives the next version and the latest document', async () => {
        assert.equal(await store.riskRules(), undefined);
        assert.equal(await store.riskRulesVersion(), 0);
        assert.equal(await store.putRiskRules('{"rules":[1]}', 1_000), 1);
        assert.equal(await store.riskRulesVersion(), 1);
        assert.deepEqual(await store.riskRules(), { version: 1, document: '{"rules":[1]}', updatedAtMs: 1_000 });
        const big = 2 ** 52 + 3;
        assert.equal(await store.putRiskRules('{"rules":[1,2]}', big), 2);
        assert.equal(await store.riskRulesVersion(), 2);
        assert.deepEqual(await store.riskRules(), { version: 2, document: '{"rules":[1,2]}', updatedAtMs: big });
      });

      test('rules: concurrent puts each get a version of their own', async () => {
        const versions = await Promise.all([1, 2, 3, 4, 5].map((i) => store.putRiskRules(`{"put":${i}}`, 2_000 + i)));
        assert.deepEqual([...versions].sort((a, b) => a - b), [1, 2, 3, 4, 5]);
        const current = await store.riskRules();
        assert.equal(current?.version, 5);
        // The document is the one of the put that got the last version.
        const last = versions.indexOf(5) + 1;
        assert.deepEqual(current, { version: 5, document: `{"put":${last}}`, updatedAtMs: 2_000 + last });
        assert.equal(await store.putRiskRules('{}', 3_000), 6);
      });

      test('audit: newest first, pages back with beforeId, filters by user, respects the limit', async () => {
        assert.deepEqual(await store.riskAudit({ limit: 10 }), []);
        await store.appendRiskAudit([]);
        const users = ['alice', 'bob', 'alice', 'carol', 'alice', 'bob', 'alice'];
        await store.appendRiskAudit(users.slice(0, 4).map((u, i) => audit(u, i)));
        await store.appendRiskAudit(users.slice(4).map((u, i) => audit(u, i + 4)));
        const all = await store.riskAudit({ limit: 100 });
        assert.equal(all.length, 7);
        assert.deepEqual(all.map(({ id: _id, ...rest }) => rest), users.map((u, i) => audit(u, i)).reverse(), 'newest first, as stored');
        const ids = all.map((e) => e.id);
        assert.ok(ids.every((id, i) => Number.isInteger(id) && (i === 0 || id < ids[i - 1]!)), `ids descending: ${ids.join(',')}`);

        const page1 = await store.riskAudit({ limit: 3 });
        assert.deepEqual(page1, all.slice(0, 3));
        const page2 = await store.riskAudit({ limit: 3, beforeId: page1[2]!.id });
        assert.deepEqual(page2, all.slice(3, 6));
        const page3 = await store.riskAudit({ limit: 3, beforeId: page2[2]!.id });
        assert.deepEqual(page3, all.slice(6));
        assert.deepEqual(await store.riskAudit({ limit: 3, beforeId: page3[0]!.id }), []);

        const alice = all.filter((e) => e.userId === 'alice');
        assert.equal(alice.length, 4);
        assert.deepEqual(await store.riskAudit({ limit: 100, userId: 'alice' }), alice);
        assert.deepEqual(await store.riskAudit({ limit: 2, userId: 'alice' }), alice.slice(0, 2));
        assert.deepEqual(await store.riskAudit({ limit: 2, userId: 'alice', beforeId: alice[1]!.id }), alice.slice(2, 4));
        assert.deepEqual(await store.riskAudit({ limit: 10, userId: 'bob', beforeId: ids[0]! }), all.filter((e) => e.userId === 'bob'));
        assert.deepEqual(await store.riskAudit({ limit: 10, userId: 'nobody' }), []);
        assert.equal((await store.riskAudit({ limit: 1 })).length, 1);
      });

      test('audit: a batch is appended whole or not at all', async () => {
        await store.appendRiskAudit([audit('alice', 1)]);
        const broken = { ...audit('bob', 2), detail: null as unknown as string };
        await assert.rejects(store.appendRiskAudit([audit('bob', 3), broken]));
        assert.deepEqual((await store.riskAudit({ limit: 10 })).map((e) => e.userId), ['alice']);
      });

      test('webhookSecret: the first candidate is the secret, for every later and concurrent call', async () => {
        const concurrent = await Promise.all(['c1', 'c2', 'c3', 'c4', 'c5'].map((c) => store.webhookSecret(c)));
        assert.equal(new Set(concurrent).size, 1, `all agree: ${concurrent.join(',')}`);
        assert.ok(['c1', 'c2', 'c3', 'c4', 'c5'].includes(concurrent[0]!));
        assert.equal(await store.webhookSecret('later'), concurrent[0]);
      });

      test('webhookSecret: a later candidate never replaces the first', async () => {
        assert.equal(await store.webhookSecret('first-secret'), 'first-secret');
        assert.equal(await store.webhookSecret('second-secret'), 'first-secret');
      });

      test('firstSeen: records each user once and keeps the first time', async () => {
        assert.deepEqual(await store.firstSeen([], 1_000), new Map());
        assert.deepEqual(await store.firstSeen(['alice', 'bob', 'alice'], 1_000), new Map([['alice', 1_000], ['bob', 1_000]]));
        const big = 2 ** 52 + 5;
        assert.deepEqual(await store.firstSeen(['bob', 'carol'], big), new Map([['bob', 1_000], ['carol', big]]));
        assert.deepEqual(await store.firstSeen(['carol', 'alice'], big + 1), new Map([['carol', big], ['alice', 1_000]]));
        // Concurrent first sightings of one user agree on one time.
        const seen = await Promise.all([10, 20, 30].map((t) => store.firstSeen(['dave'], t)));
        const times = new Set(seen.map((m) => m.get('dave')));
        assert.equal(times.size, 1);
        assert.ok([10, 20, 30].includes([...times][0]!));
      });

      if (factory.reopen) {
        test('rules, audit, secret and first-seen times survive close and reopen', async () => {
          await store.putRiskRules('{"v":1}', 5);
          await store.putRiskRules('{"v":2}', 6);
          await store.appendRiskAudit([audit('alice', 1), audit('bob', 2)]);
          await store.webhookSecret('kept');
          await store.firstSeen(['alice'], 7);
          const before = await store.riskAudit({ limit: 10 });
          const second = await reopen(store);
          assert.deepEqual(await second.riskRules(), { version: 2, document: '{"v":2}', updatedAtMs: 6 });
          assert.equal(await second.putRiskRules('{"v":3}', 8), 3);
          assert.deepEqual(await second.riskAudit({ limit: 10 }), before);
          await second.appendRiskAudit([audit('carol', 3)]);
          const [newest] = await second.riskAudit({ limit: 1 });
          assert.ok(newest!.id > before[0]!.id, 'ids carry on after a reopen');
          assert.equal(await second.webhookSecret('other'), 'kept');
          assert.deepEqual(await second.firstSeen(['alice'], 9), new Map([['alice', 7]]));
        });
      }
    });

    if (factory.reopen) {
      describe('persistence', () => {
        test('everything survives close and reopen, and seq and dedupe carry on', async () => {
          const drafts = [
            draft(AB, 'alice', 'keep-1'),
            draft(AB, 'bob', 'keep-2'),
            draft(AC, 'carol', 'keep-3'),
            draft(AB, 'alice', ''),
          ];
          await store.append(drafts);
          await store.advanceDelivered([{ userId: 'bob', deviceId: 'd1', conversationId: AB, seq: 2 }]);
          const before = {
            ab: await store.after(AB, 0, 100),
            ac: await store.after(AC, 0, 100),
            list: await store.listForUser('alice'),
            members: [...(await store.members(AB))].sort(),
          };
          assert.equal(before.ab.length, 3);

          const second = await reopen(store);
          assert.deepEqual(await second.after(AB, 0, 100), before.ab);
          assert.deepEqual(await second.after(AC, 0, 100), before.ac);
          assert.deepEqual(await second.before(AB, 0, 100), before.ab);
          assert.deepEqual(await second.listForUser('alice'), before.list);
          assert.deepEqual([...(await second.members(AB))].sort(), before.members);
          assert.equal(await second.isMember(AC, 'carol'), true);
          assert.deepEqual(await second.delivered('bob', 'd1'), new Map([[AB, 2]]));

          const [dup, next] = await second.append([draft(AB, 'bob', 'keep-2', { text: 'resent' }), draft(AB, 'bob', 'new-1')]);
          assert.deepEqual(dup, { message: before.ab[1], duplicate: true });
          assert.equal(next?.duplicate, false);
          assert.equal(next?.message.seq, 4, 'seq carries on after a reopen');
          await second.advanceDelivered([{ userId: 'bob', deviceId: 'd1', conversationId: AB, seq: 1 }]);

          const third = await reopen(second);
          assert.deepEqual((await third.after(AB, 0, 100)).map((m) => m.clientMsgId), ['keep-1', 'keep-2', '', 'new-1']);
          assert.deepEqual(await third.delivered('bob', 'd1'), new Map([[AB, 2]]), 'cursors do not move back across reopen');
          assert.equal((await third.append([draft(AC, 'alice', 'new-2')]))[0]?.message.seq, 2);
        });

        test('a rejected batch leaves nothing behind after reopen', async () => {
          await store.append([draft(AB, 'alice', 'kept')]);
          const broken = { ...draft(AB, 'alice', 'broken'), text: null as unknown as string };
          await assert.rejects(store.append([draft(AB, 'bob', 'lost'), broken]));
          const second = await reopen(store);
          assert.deepEqual((await second.after(AB, 0, 100)).map((m) => m.clientMsgId), ['kept']);
          assert.equal((await second.append([draft(AB, 'bob', 'lost')]))[0]?.duplicate, false);
        });
      });
    }
  });
}

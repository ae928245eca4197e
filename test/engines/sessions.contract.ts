// The Sessions contract (src/engines/sessions.ts), run against every
// implementation: `sessionsContract('MemorySessions', () => new MemorySessions())`.
// Each test gets a fresh, empty table from the factory and closes it afterwards.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { SessionInfo, Sessions } from '../../src/engines/sessions.js';

export type SessionsFactory = () => Sessions | Promise<Sessions>;

function session(userId: string, deviceId: string, node: string, connId: number): SessionInfo {
  return { userId, deviceId, platform: deviceId.startsWith('web') ? 'web' : 'ios', node, connId, loginAtMs: 1_700_000_000_000 + connId };
}

/** One user's devices, in device order, for comparison. */
function byDevice(list: readonly SessionInfo[] | undefined): SessionInfo[] {
  return [...(list ?? [])].sort((a, b) => a.deviceId.localeCompare(b.deviceId));
}

export function sessionsContract(name: string, factory: SessionsFactory): void {
  describe(`Sessions contract: ${name}`, () => {
    let sessions: Sessions;

    beforeEach(async () => {
      sessions = await factory();
    });

    afterEach(async () => {
      await sessions.close();
    });

    describe('bind', () => {
      test('returns undefined for a new device and makes it visible', async () => {
        const s = session('alice', 'phone', 'gw-1', 1);
        assert.equal(await sessions.bind(s), undefined);
        const found = await sessions.lookup(['alice']);
        assert.deepEqual(found.get('alice'), [s]);
      });

      test('replaces the session of the same device and returns the replaced one', async () => {
        const first = session('alice', 'phone', 'gw-1', 1);
        const second = session('alice', 'phone', 'gw-2', 7);
        await sessions.bind(first);
        assert.deepEqual(await sessions.bind(second), first);
        assert.deepEqual((await sessions.lookup(['alice'])).get('alice'), [second]);
        const third = session('alice', 'phone', 'gw-2', 8);
        assert.deepEqual(await sessions.bind(third), second);
        assert.deepEqual((await sessions.lookup(['alice'])).get('alice'), [third]);
      });

      test('keeps every device of a user, each replaced on its own', async () => {
        const phone = session('alice', 'phone', 'gw-1', 1);
        const web = session('alice', 'web-1', 'gw-2', 2);
        const tablet = session('alice', 'tablet', 'gw-1', 3);
        assert.equal(await sessions.bind(phone), undefined);
        assert.equal(await sessions.bind(web), undefined);
        assert.equal(await sessions.bind(tablet), undefined);
        assert.deepEqual(byDevice((await sessions.lookup(['alice'])).get('alice')), byDevice([phone, web, tablet]));
        const web2 = session('alice', 'web-1', 'gw-3', 4);
        assert.deepEqual(await sessions.bind(web2), web);
        assert.deepEqual(byDevice((await sessions.lookup(['alice'])).get('alice')), byDevice([phone, web2, tablet]));
      });

      test('the same device id of two users are two sessions', async () => {
        await sessions.bind(session('alice', 'd1', 'gw-1', 1));
        assert.equal(await sessions.bind(session('bob', 'd1', 'gw-1', 2)), undefined);
        const found = await sessions.lookup(['alice', 'bob']);
        assert.equal(found.get('alice')?.[0]?.connId, 1);
        assert.equal(found.get('bob')?.[0]?.connId, 2);
      });
    });

    describe('unbind', () => {
      test('removes the session of that connection', async () => {
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 1), true);
        assert.equal((await sessions.lookup(['alice'])).has('alice'), false);
      });

      test('removes only that device', async () => {
        const web = session('alice', 'web-1', 'gw-1', 2);
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        await sessions.bind(web);
        assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 1), true);
        assert.deepEqual((await sessions.lookup(['alice'])).get('alice'), [web]);
      });

      test('a late unbind of a replaced connection does not remove its successor', async () => {
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        const successor = session('alice', 'phone', 'gw-2', 9);
        await sessions.bind(successor);
        assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 1), false);
        assert.deepEqual((await sessions.lookup(['alice'])).get('alice'), [successor]);
      });

      test('needs both the node and the connection id to match', async () => {
        const s = session('alice', 'phone', 'gw-1', 5);
        await sessions.bind(s);
        assert.equal(await sessions.unbind('alice', 'phone', 'gw-2', 5), false, 'same connId on another node');
        assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 6), false, 'another connId on the same node');
        assert.deepEqual((await sessions.lookup(['alice'])).get('alice'), [s]);
        assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 5), true);
      });

      test('returns false for sessions that do not exist', async () => {
        assert.equal(await sessions.unbind('nobody', 'phone', 'gw-1', 1), false);
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        assert.equal(await sessions.unbind('alice', 'web-1', 'gw-1', 1), false);
        assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 1), true);
        assert.equal(await sessions.unbind('alice', 'phone', 'gw-1', 1), false, 'a second unbind');
      });
    });

    describe('lookup', () => {
      test('returns every online user asked for and leaves out the rest', async () => {
        const online = Array.from({ length: 40 }, (_, i) => `user${i}`);
        for (const [i, u] of online.entries()) await sessions.bind(session(u, 'phone', `gw-${i % 3}`, i));
        const asked = [...online.filter((_, i) => i % 2 === 0), 'offline-1', 'offline-2'];
        const found = await sessions.lookup(asked);
        assert.deepEqual([...found.keys()].sort(), online.filter((_, i) => i % 2 === 0).sort());
        for (const [i, u] of online.entries()) {
          if (i % 2 === 0) assert.deepEqual(found.get(u), [session(u, 'phone', `gw-${i % 3}`, i)]);
        }
      });

      test('of no users is empty', async () => {
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        assert.equal((await sessions.lookup([])).size, 0);
        assert.equal((await sessions.lookup(['bob'])).size, 0);
      });
    });

    describe('dropNode', () => {
      test('removes every session of the node and counts them', async () => {
        const kept = [session('alice', 'web-1', 'gw-2', 2), session('carol', 'phone', 'gw-2', 4)];
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        await sessions.bind(kept[0]!);
        await sessions.bind(session('bob', 'phone', 'gw-1', 3));
        await sessions.bind(session('bob', 'web-1', 'gw-1', 5));
        await sessions.bind(kept[1]!);
        assert.equal(await sessions.dropNode('gw-1'), 3);
        const found = await sessions.lookup(['alice', 'bob', 'carol']);
        assert.deepEqual(found.get('alice'), [kept[0]]);
        assert.equal(found.has('bob'), false, 'a user whose devices were all on the node is offline');
        assert.deepEqual(found.get('carol'), [kept[1]]);
      });

      test('of a node with no sessions removes nothing', async () => {
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        assert.equal(await sessions.dropNode('gw-9'), 0);
        assert.equal((await sessions.lookup(['alice'])).get('alice')?.length, 1);
      });

      test('leaves later binds working', async () => {
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        await sessions.dropNode('gw-1');
        const again = session('alice', 'phone', 'gw-1', 2);
        assert.equal(await sessions.bind(again), undefined);
        assert.deepEqual((await sessions.lookup(['alice'])).get('alice'), [again]);
      });
    });

    describe('revoke and revokedBefore', () => {
      test('nothing revoked: 0', async () => {
        assert.equal(await sessions.revokedBefore('alice', 'phone'), 0);
      });

      test('a user-wide revocation applies to every device of that user only', async () => {
        await sessions.revoke('alice', undefined, 1_000, 60_000);
        assert.equal(await sessions.revokedBefore('alice', 'phone'), 1_000);
        assert.equal(await sessions.revokedBefore('alice', 'laptop'), 1_000);
        assert.equal(await sessions.revokedBefore('bob', 'phone'), 0);
      });

      test('a device revocation applies to that device; the later of user and device wins', async () => {
        await sessions.revoke('alice', 'phone', 2_000, 60_000);
        assert.equal(await sessions.revokedBefore('alice', 'phone'), 2_000);
        assert.equal(await sessions.revokedBefore('alice', 'laptop'), 0);
        await sessions.revoke('alice', undefined, 1_500, 60_000);
        assert.equal(await sessions.revokedBefore('alice', 'phone'), 2_000);
        assert.equal(await sessions.revokedBefore('alice', 'laptop'), 1_500);
      });

      test('never moves back in time', async () => {
        await sessions.revoke('alice', undefined, 5_000, 60_000);
        await sessions.revoke('alice', undefined, 3_000, 60_000);
        assert.equal(await sessions.revokedBefore('alice', 'phone'), 5_000);
      });

      test('is forgotten after its ttl', async () => {
        await sessions.revoke('alice', undefined, 5_000, 150);
        assert.equal(await sessions.revokedBefore('alice', 'phone'), 5_000);
        const deadline = Date.now() + 5_000;
        while ((await sessions.revokedBefore('alice', 'phone')) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        assert.equal(await sessions.revokedBefore('alice', 'phone'), 0);
      });
    });

    describe('bindUnlessRevoked', () => {
      test('binds when nothing is revoked, and returns the replaced session and every session of the user', async () => {
        const laptop = session('alice', 'laptop', 'gw-2', 7);
        await sessions.bind(laptop);
        const first = session('alice', 'phone', 'gw-1', 1);
        const r1 = await sessions.bindUnlessRevoked(first, 10_000);
        assert.deepEqual(r1.bound && { previous: r1.previous, sessions: byDevice(r1.sessions) }, { previous: undefined, sessions: [laptop, first] });
        const second = session('alice', 'phone', 'gw-2', 2);
        const r2 = await sessions.bindUnlessRevoked(second, 10_000);
        assert.deepEqual(r2.bound && { previous: r2.previous, sessions: byDevice(r2.sessions) }, { previous: first, sessions: [laptop, second] });
        assert.deepEqual(byDevice((await sessions.lookup(['alice'])).get('alice')), [laptop, second]);
      });

      test('refuses a token issued at or before a revocation of its user or device, and leaves the sessions alone', async () => {
        const live = session('alice', 'phone', 'gw-1', 1);
        await sessions.bind(live);
        await sessions.revoke('alice', undefined, 5_000, 60_000);
        assert.deepEqual(await sessions.bindUnlessRevoked(session('alice', 'phone', 'gw-2', 2), 5_000), { bound: false, revokedBeforeMs: 5_000 });
        await sessions.revoke('alice', 'tablet', 8_000, 60_000);
        assert.deepEqual(await sessions.bindUnlessRevoked(session('alice', 'tablet', 'gw-2', 3), 7_999), { bound: false, revokedBeforeMs: 8_000 });
        assert.deepEqual((await sessions.lookup(['alice'])).get('alice'), [live], 'a refused bind displaced nothing');
        // A token issued after the revocation binds; another user is not affected.
        assert.equal((await sessions.bindUnlessRevoked(session('alice', 'phone', 'gw-2', 4), 5_001)).bound, true);
        assert.equal((await sessions.bindUnlessRevoked(session('bob', 'phone', 'gw-2', 5), 1)).bound, true);
      });
    });

    describe('nodes', () => {
      test('is empty at first', async () => {
        assert.deepEqual(await sessions.nodes(), []);
      });

      test('lists every node holding a session, and not a dropped node', async () => {
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        await sessions.bind(session('bob', 'phone', 'gw-2', 2));
        await sessions.bind(session('carol', 'phone', 'gw-1', 3));
        assert.deepEqual((await sessions.nodes()).sort(), ['gw-1', 'gw-2']);
        await sessions.dropNode('gw-1');
        assert.deepEqual(await sessions.nodes(), ['gw-2']);
      });

      test('lists a dropped node again once it binds again', async () => {
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        await sessions.dropNode('gw-1');
        await sessions.bind(session('alice', 'phone', 'gw-1', 2));
        assert.deepEqual(await sessions.nodes(), ['gw-1']);
      });

      test('a node whose devices all moved away is gone after its drop', async () => {
        await sessions.bind(session('alice', 'phone', 'gw-1', 1));
        await sessions.bind(session('alice', 'phone', 'gw-2', 2));
        await sessions.dropNode('gw-1');
        assert.deepEqual(await sessions.nodes(), ['gw-2']);
      });
    });
  });
}

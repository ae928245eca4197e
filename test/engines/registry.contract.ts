// The Registry contract (src/engines/registry.ts), run against every
// implementation: `registryContract('MemoryRegistry', () => new MemoryRegistry())`.
// Each test gets a fresh, empty registry from the factory and closes it afterwards.
//
// TTLs are real time. Expiry tests use short TTLs and then wait several
// times as long, so a slow machine makes them slower, never wrong.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { NODE_ROLES, type NodeInfo, type NodeRole, type Registry } from '../../src/engines/registry.js';

export type RegistryFactory = () => Registry | Promise<Registry>;

const LONG_TTL = 60_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function gateway(id: string, load: number): NodeInfo {
  return {
    id,
    role: 'gateway',
    tcpUrl: `tcp://127.0.0.1:${9000 + load}`,
    wsUrl: `ws://127.0.0.1:${8000 + load}/ws`,
    load,
    startedAtMs: 1_700_000_000_000,
  };
}

function logic(id: string, load = 0): NodeInfo {
  return { id, role: 'logic', load, startedAtMs: 1_700_000_000_000 };
}

/** A node of a service role (or the combined logic) with everything a service announces. */
function service(id: string, role: NodeRole, load = 0): NodeInfo {
  return {
    id,
    role,
    httpUrl: `http://10.0.0.${load % 250}:8080`,
    services: role === 'logic' ? ['auth', 'message', 'presence', 'push', 'group', 'storage', 'risk'] : [role],
    load,
    startedAtMs: 1_700_000_000_000 + load,
  };
}

async function ids(registry: Registry, role: NodeRole): Promise<string[]> {
  return (await registry.live(role)).map((n) => n.id);
}

export function registryContract(name: string, factory: RegistryFactory): void {
  describe(`Registry contract: ${name}`, () => {
    let registry: Registry;

    beforeEach(async () => {
      registry = await factory();
    });

    afterEach(async () => {
      await registry.close();
    });

    test('is empty at first', async () => {
      for (const role of NODE_ROLES) assert.deepEqual(await registry.live(role), [], role);
      assert.deepEqual(await registry.all(), []);
    });

    test('an announced node is live with everything it announced', async () => {
      const node = gateway('gw-1', 12);
      await registry.announce(node, LONG_TTL);
      assert.deepEqual(await registry.live('gateway'), [node]);
    });

    test('keeps a node without public addresses as announced', async () => {
      const node = logic('logic-1', 3);
      await registry.announce(node, LONG_TTL);
      const [live] = await registry.live('logic');
      assert.ok(live);
      assert.equal(live.id, 'logic-1');
      assert.equal(live.role, 'logic');
      assert.equal(live.load, 3);
      assert.equal(live.startedAtMs, node.startedAtMs);
      assert.equal(live.tcpUrl ?? undefined, undefined);
      assert.equal(live.wsUrl ?? undefined, undefined);
    });

    test('keeps a service node\'s HTTP address and services as announced', async () => {
      const node = { ...service('msg-1', 'message', 7), services: ['message', 'presence', 'push'] };
      await registry.announce(node, LONG_TTL);
      assert.deepEqual(await registry.live('message'), [node]);
      assert.deepEqual(await registry.all(), [node]);
      const combined = service('logic-1', 'logic', 2);
      await registry.announce(combined, LONG_TTL);
      assert.deepEqual(await registry.live('logic'), [combined]);
    });

    test('every role can be announced, and each is listed under its own role only', async () => {
      for (const [i, role] of NODE_ROLES.entries()) {
        await registry.announce(role === 'gateway' ? gateway(`${role}-a`, i) : service(`${role}-a`, role, i), LONG_TTL);
        await registry.announce(role === 'gateway' ? gateway(`${role}-b`, i + 100) : service(`${role}-b`, role, i + 100), LONG_TTL);
      }
      for (const role of NODE_ROLES) {
        const live = await registry.live(role);
        assert.deepEqual(live.map((n) => n.id), [`${role}-a`, `${role}-b`], role);
        assert.ok(live.every((n) => n.role === role), role);
      }
    });

    test('all() lists every live node of every role, by role name then id', async () => {
      await registry.announce(service('push-2', 'push', 1), LONG_TTL);
      await registry.announce(gateway('gw-2', 5), LONG_TTL);
      await registry.announce(service('auth-1', 'auth', 9), LONG_TTL);
      await registry.announce(gateway('gw-1', 50), LONG_TTL);
      await registry.announce(service('push-1', 'push', 3), LONG_TTL);
      await registry.announce(logic('logic-1'), LONG_TTL);
      const all = await registry.all();
      assert.deepEqual(all.map((n) => `${n.role}/${n.id}`), ['auth/auth-1', 'gateway/gw-1', 'gateway/gw-2', 'logic/logic-1', 'push/push-1', 'push/push-2']);
      assert.deepEqual(all[0], service('auth-1', 'auth', 9), 'with everything announced');
      assert.deepEqual(all[1], gateway('gw-1', 50));
    });

    test('all() leaves out nodes expired or removed, and lists a refreshed node once', async () => {
      await registry.announce(service('msg-1', 'message', 1), LONG_TTL);
      await registry.announce(service('msg-short', 'message', 2), 60);
      await registry.announce(gateway('gw-short', 0), 60);
      await registry.announce(service('grp-1', 'group', 3), LONG_TTL);
      await registry.announce(service('risk-1', 'risk', 4), LONG_TTL);
      await registry.announce(service('msg-1', 'message', 10), LONG_TTL);
      await registry.remove('risk-1');
      await sleep(400);
      const all = await registry.all();
      assert.deepEqual(all.map((n) => n.id), ['grp-1', 'msg-1']);
      assert.equal(all[1]?.load, 10, 'as last announced');
    });

    test('a node announced under another role moves there: listed once, under its new role only', async () => {
      await registry.announce(service('node-1', 'message', 1), LONG_TTL);
      await registry.announce(service('node-1', 'storage', 2), LONG_TTL);
      assert.deepEqual(await registry.live('message'), []);
      assert.deepEqual(await ids(registry, 'storage'), ['node-1']);
      await registry.announce(gateway('node-1', 3), LONG_TTL);
      assert.deepEqual(await registry.live('storage'), []);
      assert.deepEqual(await registry.all(), [gateway('node-1', 3)]);
    });

    test('lists only nodes of the role asked for', async () => {
      await registry.announce(gateway('gw-1', 1), LONG_TTL);
      await registry.announce(logic('logic-1'), LONG_TTL);
      await registry.announce(gateway('gw-2', 2), LONG_TTL);
      await registry.announce(logic('logic-2'), LONG_TTL);
      assert.deepEqual(await ids(registry, 'gateway'), ['gw-1', 'gw-2']);
      assert.deepEqual((await ids(registry, 'logic')).sort(), ['logic-1', 'logic-2']);
    });

    test('lists the least loaded first', async () => {
      const loads = [50, 3, 1000, 0, 17, 3];
      for (const [i, load] of loads.entries()) await registry.announce(gateway(`gw-${i}`, load), LONG_TTL);
      const live = await registry.live('gateway');
      assert.equal(live.length, loads.length);
      assert.deepEqual(live.map((n) => n.load), [...loads].sort((a, b) => a - b));
      assert.deepEqual(live.slice(0, 1).map((n) => n.id), ['gw-3']);
      assert.deepEqual(live.slice(-1).map((n) => n.id), ['gw-2']);
    });

    test('a refresh replaces what was announced, without a second entry', async () => {
      await registry.announce(gateway('gw-1', 10), LONG_TTL);
      await registry.announce(gateway('gw-2', 20), LONG_TTL);
      assert.deepEqual(await ids(registry, 'gateway'), ['gw-1', 'gw-2']);
      const busier = { ...gateway('gw-1', 30), wsUrl: 'ws://10.0.0.1:8080/ws' };
      await registry.announce(busier, LONG_TTL);
      const live = await registry.live('gateway');
      assert.deepEqual(live.map((n) => n.id), ['gw-2', 'gw-1'], 'reordered by the new load');
      assert.deepEqual(live[1], busier);
    });

    test('a node not refreshed within its TTL is not live', async () => {
      await registry.announce(gateway('gw-short', 0), 60);
      await registry.announce(gateway('gw-long', 5), LONG_TTL);
      await registry.announce(logic('logic-short'), 60);
      await sleep(400);
      assert.deepEqual(await ids(registry, 'gateway'), ['gw-long']);
      assert.deepEqual(await ids(registry, 'logic'), []);
    });

    test('a refresh extends the TTL from the refresh', async () => {
      await registry.announce(gateway('gw-1', 0), 200);
      await sleep(100);
      await registry.announce(gateway('gw-1', 0), LONG_TTL);
      // Well past the first TTL: only the refresh keeps the node live.
      await sleep(400);
      assert.deepEqual(await ids(registry, 'gateway'), ['gw-1']);
    });

    test('a refresh with a short TTL shortens it', async () => {
      await registry.announce(gateway('gw-1', 0), LONG_TTL);
      await registry.announce(gateway('gw-1', 0), 60);
      await sleep(400);
      assert.deepEqual(await ids(registry, 'gateway'), []);
    });

    test('an expired node comes back when announced again', async () => {
      await registry.announce(gateway('gw-1', 0), 50);
      await sleep(300);
      assert.deepEqual(await ids(registry, 'gateway'), []);
      await registry.announce(gateway('gw-1', 4), LONG_TTL);
      assert.deepEqual(await registry.live('gateway'), [gateway('gw-1', 4)]);
    });

    test('announce tells whether the node was live: a refresh yes; a first, a lapsed or a removed node no', async () => {
      assert.equal(await registry.announce(gateway('gw-1', 0), LONG_TTL), false, 'first announce');
      assert.equal(await registry.announce(gateway('gw-1', 1), LONG_TTL), true, 'refresh');
      assert.equal(await registry.announce(gateway('gw-2', 0), 50), false);
      await sleep(300);
      assert.equal(await registry.announce(gateway('gw-2', 0), LONG_TTL), false, 'after its TTL lapsed');
      await registry.remove('gw-1');
      assert.equal(await registry.announce(gateway('gw-1', 0), LONG_TTL), false, 'after remove');
    });

    test('remove takes a node out at once', async () => {
      await registry.announce(gateway('gw-1', 1), LONG_TTL);
      await registry.announce(gateway('gw-2', 2), LONG_TTL);
      await registry.remove('gw-1');
      assert.deepEqual(await ids(registry, 'gateway'), ['gw-2']);
      await registry.remove('gw-unknown');
      await registry.remove('gw-1');
      assert.deepEqual(await ids(registry, 'gateway'), ['gw-2']);
    });

    test('what live() and all() return is a copy, and so is what was announced', async () => {
      await registry.announce(gateway('gw-1', 1), LONG_TTL);
      const [first] = await registry.live('gateway');
      assert.ok(first);
      first.load = 999;
      assert.equal((await registry.live('gateway'))[0]?.load, 1);
      const announced = service('msg-1', 'message', 1);
      await registry.announce(announced, LONG_TTL);
      announced.services!.push('changed after announce');
      const [fromAll] = (await registry.all()).filter((n) => n.id === 'msg-1');
      assert.deepEqual(fromAll?.services, ['message']);
      fromAll!.services!.push('changed by a reader');
      fromAll!.load = 999;
      assert.deepEqual(await registry.live('message'), [service('msg-1', 'message', 1)]);
    });
  });
}

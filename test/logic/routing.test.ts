// Both downlink routing modes deliver the same way: targeted (session lookup,
// per-gateway stream) and broadcast (one stream, each gateway keeps what it holds).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, waitFor } from '../helpers/server.js';
import { createClient, type ChatMessage, type LonglinkClient } from '../../src/client/index.js';

for (const routing of ['targeted', 'broadcast'] as const) {
  test(`${routing} routing: 1:1 and group messages reach every device once, not the sending one`, async () => {
    const server = await startTestServer({ routing });
    const clients: LonglinkClient[] = [];
    try {
      const open = async (user: string, device: string, url: string) => {
        const got: ChatMessage[] = [];
        const c = createClient({ url, token: await server.token(user, device) });
        c.on('message', (m) => got.push(m));
        await c.connect();
        clients.push(c);
        return { c, got };
      };
      const alice = await open('alice', 'phone', server.tcpUrl);
      const aliceWeb = await open('alice', 'web', server.wsUrl);
      const bob = await open('bob', 'phone', server.wsUrl);
      const carol = await open('carol', 'phone', server.tcpUrl);
      await alice.c.send({ to: 'bob', text: 'hi bob' });
      await waitFor(() => bob.got.length === 1 && aliceWeb.got.length === 1, 5000, '1:1 delivery');
      const group = await alice.c.createGroup('Team', ['bob']);
      await alice.c.send({ groupId: group.groupId, text: 'hi team' });
      await waitFor(() => bob.got.filter((m) => m.text === 'hi team').length === 1, 5000, 'group delivery');
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(bob.got.map((m) => m.text), ['hi bob', '', 'hi team'], 'the 1:1 message, the group event, the group message');
      assert.deepEqual(alice.got.map((m) => m.event?.type ?? m.text), ['group_created'], 'the sending device gets only the event');
      assert.equal(aliceWeb.got.filter((m) => m.text === 'hi team').length, 1);
      assert.deepEqual(carol.got, [], 'a non-member gets nothing');
    } finally {
      for (const c of clients) await c.close();
      await server.close();
    }
  });
}

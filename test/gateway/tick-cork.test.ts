// TickCork: what a gateway writes to one socket in one tick leaves together,
// and nothing waits past the tick.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { TickCork } from '../../src/gateway/transport.js';

async function pair(): Promise<{ server: net.Socket; client: net.Socket; close(): void }> {
  const listener = net.createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const port = (listener.address() as net.AddressInfo).port;
  const accepted = once(listener, 'connection');
  const client = net.connect(port, '127.0.0.1');
  client.setNoDelay(true);
  const [server] = (await accepted) as [net.Socket];
  server.setNoDelay(true);
  await once(client, 'connect').catch(() => undefined);
  return { server, client, close: () => { client.destroy(); server.destroy(); listener.close(); } };
}

/** Counts the socket's writes to the kernel (each a system call): the handle's write methods. */
function countWrites(socket: net.Socket): () => number {
  const handle = (socket as unknown as { _handle: Record<string, unknown> })._handle;
  let calls = 0;
  for (const name of ['writev', 'writeBuffer', 'writeUtf8String', 'writeLatin1String', 'writeAsciiString', 'writeUcs2String']) {
    const original = handle[name];
    if (typeof original !== 'function') continue;
    handle[name] = function (this: unknown, ...args: unknown[]) {
      calls++;
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    };
  }
  return () => calls;
}

/** The client's reads until `bytes` have arrived. */
function readsUntil(client: net.Socket, bytes: number): Promise<Buffer[]> {
  return new Promise((resolve) => {
    const reads: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer) => {
      reads.push(chunk);
      got += chunk.length;
      if (got >= bytes) {
        client.off('data', onData);
        resolve(reads);
      }
    };
    client.on('data', onData);
  });
}

test('frames written in one tick leave in one system call, in order', async () => {
  const { server, client, close } = await pair();
  try {
    const cork = new TickCork(server);
    const writes = countWrites(server);
    const frames = ['first;', 'second;', 'third;'];
    const arrived = readsUntil(client, frames.join('').length);
    for (const f of frames) {
      cork.hold();
      server.write(f);
    }
    const reads = await arrived;
    assert.equal(Buffer.concat(reads).toString(), 'first;second;third;');
    assert.equal(writes(), 1, 'one write to the kernel for the three frames');
  } finally {
    close();
  }
});

test('nothing is held past the tick: a write of a later tick goes out without another write after it', async () => {
  const { server, client, close } = await pair();
  try {
    const cork = new TickCork(server);
    const writes = countWrites(server);
    const first = readsUntil(client, 'a;'.length);
    cork.hold();
    server.write('a;');
    assert.equal(Buffer.concat(await first).toString(), 'a;');
    await new Promise((r) => setImmediate(r));
    const second = readsUntil(client, 'b;'.length);
    cork.hold();
    server.write('b;');
    assert.equal(Buffer.concat(await second).toString(), 'b;');
    assert.equal(server.writableCorked, 0, 'the socket is uncorked once the tick is over');
    assert.equal(writes(), 2, 'one write a tick');
  } finally {
    close();
  }
});

test('a socket destroyed in the tick of a write still sends what was written first (release before destroy)', async () => {
  const { server, client, close } = await pair();
  try {
    const cork = new TickCork(server);
    const arrived = readsUntil(client, 'why you are cut;'.length);
    cork.hold();
    server.write('why you are cut;');
    cork.release();
    server.destroy();
    assert.equal(Buffer.concat(await arrived).toString(), 'why you are cut;');
  } finally {
    close();
  }
});

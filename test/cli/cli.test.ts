// The acceptance checks of the core issue, through the real binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import WebSocket from 'ws';
import { freePort, run, startServer, type Proc } from './cli-helpers.js';

interface MessageLine { conversation: string; seq: number; from: string; text: string; time: string }
interface AckLine { conversation: string; seq: number; client_msg_id: string }

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'longlink-cli-'));
}

async function listen(server: string, user: string, device: string): Promise<Proc> {
  const p = run(['listen', '--user', user, '--device', device, '--server', server]);
  await p.waitFor(() => p.errLines.some((l) => l.includes('"type":"online"')), 15_000, 'listen online');
  return p;
}

test('listen/send round trip over TCP and WS; a restarted listen gets exactly what it missed', async () => {
  const dir = tempDir();
  const s = await startServer(dir);
  try {
    const bob = await listen(s.http, 'bob', 'phone');
    const viaTcp = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'over tcp', '--transport', 'tcp', '--server', s.http]);
    assert.equal(await viaTcp.exited, 0, viaTcp.errLines.join('\n'));
    const viaWs = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'over ws', '--transport', 'ws', '--server', s.http]);
    assert.equal(await viaWs.exited, 0, viaWs.errLines.join('\n'));
    assert.equal(viaTcp.json<AckLine>('ack').length, 1);
    await bob.waitFor(() => bob.json('message').length === 2, 10_000, 'two messages');
    const first = bob.json<MessageLine>('message');
    assert.deepEqual(first.map((m) => [m.from, m.text, m.seq]), [['alice', 'over tcp', 1], ['alice', 'over ws', 2]]);
    assert.equal(first[0]!.conversation, 'u:alice:bob');
    assert.ok(!Number.isNaN(Date.parse(first[0]!.time)));

    await bob.kill('SIGINT'); // flushes its acks
    const more = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'later', '--count', '3', '--server', s.http]);
    assert.equal(await more.exited, 0, more.errLines.join('\n'));
    assert.deepEqual(more.json<AckLine>('ack').map((a) => a.seq), [3, 4, 5]);

    const bobAgain = await listen(s.http, 'bob', 'phone');
    await bobAgain.waitFor(() => bobAgain.json('message').length >= 3, 10_000, 'three missed messages');
    await new Promise((r) => setTimeout(r, 500)); // nothing else may arrive
    assert.deepEqual(bobAgain.json<MessageLine>('message').map((m) => m.text), ['later-1', 'later-2', 'later-3']);
    await bobAgain.kill('SIGINT');
  } finally {
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('200 acked messages survive SIGKILL of the server: delivered once each, in order', async () => {
  const dir = tempDir();
  let s = await startServer(dir);
  try {
    const send = run(['send', '--user', 'carol', '--to', 'dave', '--text', 'm', '--count', '200', '--server', s.http]);
    assert.equal(await send.exited, 0, send.errLines.join('\n'));
    assert.equal(send.json('ack').length, 200);
    await s.proc.kill('SIGKILL');
    s = await startServer(dir);
    const dave = await listen(s.http, 'dave', 'laptop');
    await dave.waitFor(() => dave.json('message').length >= 200, 15_000, '200 messages');
    await new Promise((r) => setTimeout(r, 300));
    const got = dave.json<MessageLine>('message');
    assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 200 }, (_, i) => i + 1));
    assert.deepEqual(got.map((m) => m.text), Array.from({ length: 200 }, (_, i) => `m-${i + 1}`));
    await dave.kill('SIGINT');
  } finally {
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGKILL mid-stream: every acked message is stored exactly once and delivered in order after restart', async () => {
  const dir = tempDir();
  const httpPort = await freePort();
  const tcpPort = await freePort();
  let s = await startServer(dir, httpPort, tcpPort);
  try {
    const erin = await listen(s.http, 'erin', 'tablet');
    const send = run(['send', '--user', 'frank', '--to', 'erin', '--text', 'x', '--count', '1500', '--timeout', '90', '--server', s.http]);
    await send.waitFor(() => send.json('ack').length >= 100, 20_000, '100 acks');
    await s.proc.kill('SIGKILL');
    const ackedBeforeKill = send.json<AckLine>('ack').length;
    s = await startServer(dir, httpPort, tcpPort);
    // The sender reconnects and resends what was not acked; nothing is stored twice.
    assert.equal(await send.exited, 0, send.errLines.slice(-5).join('\n'));
    const acks = send.json<AckLine>('ack');
    assert.equal(acks.length, 1500);
    assert.ok(ackedBeforeKill >= 100);
    assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 1500 }, (_, i) => i + 1), 'seq follows send order, no gaps');
    await erin.waitFor(() => erin.json('message').length >= 1500, 30_000, '1500 messages at erin');
    await new Promise((r) => setTimeout(r, 300));
    const got = erin.json<MessageLine>('message');
    assert.deepEqual(got.map((m) => m.text), Array.from({ length: 1500 }, (_, i) => `x-${i + 1}`));
    await erin.kill('SIGINT');
  } finally {
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('garbage at the TCP port, the WebSocket endpoint and the HTTP API leaves the server serving', async () => {
  const dir = tempDir();
  const s = await startServer(dir);
  try {
    const tcp = new URL(s.tcp);
    const http = new URL(s.http);
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
    const blasts: Promise<void>[] = [];
    for (let i = 0; i < 30; i++) {
      blasts.push(new Promise((resolve) => {
        const sock = net.connect({ host: tcp.hostname, port: Number(tcp.port) }, () => sock.end(bytes(1 + Math.floor(rand() * 4000))));
        sock.on('error', () => resolve());
        sock.on('close', () => resolve());
        sock.resume();
      }));
      blasts.push(new Promise((resolve) => {
        const sock = net.connect({ host: http.hostname, port: Number(http.port) }, () => sock.end(bytes(1 + Math.floor(rand() * 4000))));
        sock.on('error', () => resolve());
        sock.on('close', () => resolve());
        sock.resume();
      }));
      blasts.push(new Promise((resolve) => {
        const ws = new WebSocket(s.ws);
        ws.on('open', () => {
          ws.send(bytes(1 + Math.floor(rand() * 4000)));
          ws.send(bytes(10).toString('latin1'));
        });
        ws.on('error', () => resolve());
        ws.on('close', () => resolve());
        setTimeout(() => ws.terminate(), 2000);
      }));
    }
    for (const body of ['{', 'null', '[]', '{"user_id": 5}', bytes(300).toString('latin1')]) {
      const res = await fetch(`${s.http}/api/v1/tokens`, { method: 'POST', body, headers: { authorization: 'Bearer nope' } });
      assert.equal(res.status, 401);
    }
    await Promise.all(blasts);
    assert.equal(s.proc.exitCode, null, 'server still running');
    const health = await fetch(`${s.http}/healthz`);
    assert.equal(health.status, 200);

    const gina = await listen(s.http, 'gina', 'g1');
    const send = run(['send', '--user', 'hank', '--to', 'gina', '--text', 'still here', '--transport', 'ws', '--server', s.http]);
    assert.equal(await send.exited, 0);
    await gina.waitFor(() => gina.json('message').length === 1, 10_000, 'message after garbage');
    assert.equal(gina.json<MessageLine>('message')[0]!.text, 'still here');
    await gina.kill('SIGINT');
  } finally {
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('send exits non-zero when a message cannot be acked; usage errors exit 2', async () => {
  const dir = tempDir();
  const s = await startServer(dir);
  try {
    const empty = run(['send', '--user', 'alice', '--to', 'bob', '--text', '', '--server', s.http]);
    assert.equal(await empty.exited, 1);
    assert.ok(empty.errLines.some((l) => l.includes('TEXT_EMPTY')), empty.errLines.join('\n'));
    const noUser = run(['send', '--to', 'bob', '--text', 'x', '--server', s.http]);
    assert.equal(await noUser.exited, 2);
    const wrongKey = run(['send', '--user', 'a', '--to', 'b', '--text', 'x', '--server', s.http, '--admin-key', 'wrong-key-wrong-key']);
    assert.equal(await wrongKey.exited, 1);
    assert.ok(wrongKey.errLines.some((l) => l.includes('UNAUTHORIZED')), wrongKey.errLines.join('\n'));
  } finally {
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('send into a pipe nobody reads yet: every ack line is there once the reader catches up, and it exits 0', async () => {
  const dir = tempDir();
  const s = await startServer(dir);
  const procs: Proc[] = [];
  try {
    const count = 2000; // ~200 KiB of ack lines: more than a pipe buffer holds
    const bob = await listen(s.http, 'bob', 'pipe');
    procs.push(bob);
    const send = run(['send', '--user', 'alice', '--to', 'bob', '--text', 'p', '--count', String(count), '--server', s.http]);
    procs.push(send);
    send.child.stdout!.pause(); // the reader of `longlink send … | slow-consumer` is busy
    // Acks go out before pushes: once bob has every message, alice had every ack.
    await bob.waitFor(() => bob.json('message').length >= count, 30_000, `${count} messages at bob`);
    await new Promise((r) => setTimeout(r, 300)); // a send that exits now, dropping queued output, would
    send.child.stdout!.resume();
    assert.equal(await send.exited, 0, send.errLines.join('\n'));
    const acks = send.json<AckLine>('ack');
    assert.equal(acks.length, count, 'no ack line lost at exit');
    assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: count }, (_, i) => i + 1));
  } finally {
    for (const p of procs) {
      p.child.stdout!.resume();
      await p.kill('SIGKILL');
    }
    await s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

// The load generator's Longlink client: protobuf frames over TCP or
// WebSocket with nothing between the socket and the ledger (the SDK's outbox
// and store would measure the SDK, not the server). It logs in, sends with
// the frame id as the ledger's message id, acks pushes like the SDK does
// (PushAck, cumulative per conversation, 30 ms after a push) and hands
// message texts to the ledger.
import net from 'node:net';
import WebSocket from 'ws';
import {
  LengthPrefixedReader, decodeFrame, encodeFrame, lengthPrefixed, makeFrame, type Frame, type FrameBodyInit,
} from '../../src/protocol/index.js';
import type { Adapter, BenchConn, ConnEvents, ConnectTarget } from './adapter.js';

const LOGIN_ID = 0xffff_ffff;
const PING_ID = 0xffff_fffe;
/** As the SDK (src/client/client.ts ackDelayMs). */
const ACK_DELAY_MS = 30;
/** Every heartbeat is the same frame: encoded once (250,000 connections send 12,500 a second). */
const PING = encodeFrame(makeFrame(PING_ID, { case: 'ping', value: {} }));

interface Wire {
  write(bytes: Uint8Array): void;
  close(): void;
}

class LonglinkConn implements BenchConn {
  closedByUs = false;
  dropped = false;
  /** Logged in (its LoginResult came). */
  open = false;
  private readonly ackedUpTo = new Map<string, bigint>();
  private readonly received = new Map<string, bigint>();
  private ackTimer: NodeJS.Timeout | undefined;

  constructor(private readonly wire: Wire, private readonly events: ConnEvents, private readonly loggedIn: (err?: Error) => void) {}

  frame(id: number, body: FrameBodyInit): void {
    this.wire.write(encodeFrame(makeFrame(id, body)));
  }

  send(to: string, msgId: number, payload: string, group: boolean): void {
    this.frame(msgId, {
      case: 'send',
      value: group ? { clientMsgId: String(msgId), conversationId: `g:${to}`, text: payload } : { clientMsgId: String(msgId), toUser: to, text: payload },
    });
  }

  ping(): void {
    this.wire.write(PING);
  }

  close(): void {
    this.closedByUs = true;
    clearTimeout(this.ackTimer);
    this.wire.close();
  }

  onBytes(bytes: Uint8Array): void {
    let frame: Frame;
    try {
      frame = decodeFrame(bytes);
    } catch (err) {
      this.drop(`undecodable frame from the server: ${(err as Error).message}`);
      return;
    }
    const body = frame.body;
    switch (body.case) {
      case 'sendAck':
        this.events.onAck(frame.id);
        return;
      case 'push':
        for (const m of body.value.messages) {
          if (m.event === undefined) this.events.onDeliver(m.text);
          if (m.seq > (this.received.get(m.conversationId) ?? 0n)) this.received.set(m.conversationId, m.seq);
        }
        this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
        return;
      case 'loginResult':
        this.open = true;
        this.loggedIn();
        return;
      case 'error':
        if (frame.id === LOGIN_ID) this.loggedIn(new Error(`login refused: ${body.value.code} ${body.value.message}`));
        else if (frame.id !== PING_ID && frame.id !== 0) this.events.onRefused?.(frame.id, String(body.value.code));
        else if (body.value.fatal) this.drop(`error ${body.value.code}: ${body.value.message}`);
        return;
      case 'kick':
        this.drop(`kicked: ${body.value.code} ${body.value.reason}`);
        return;
      default:
        return;
    }
  }

  private flushAcks(): void {
    this.ackTimer = undefined;
    if (this.closedByUs || this.dropped) return;
    for (const [conversationId, seq] of this.received) {
      if ((this.ackedUpTo.get(conversationId) ?? 0n) >= seq) continue;
      this.ackedUpTo.set(conversationId, seq);
      this.frame(0, { case: 'pushAck', value: { conversationId, seq } });
    }
  }

  drop(reason: string): void {
    if (this.closedByUs || this.dropped) return;
    this.dropped = true;
    // Before its LoginResult a connection failing is a failed attempt (the connect rejects), not a drop:
    // counted once, as the baselines do.
    if (this.open) this.events.onDrop(reason);
    else this.loggedIn(new Error(reason));
  }
}

function connectTcp(url: URL, token: string, events: ConnEvents): Promise<LonglinkConn> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: url.hostname, port: Number(url.port) });
    socket.setNoDelay(true);
    const reader = new LengthPrefixedReader(64 * 1024 * 1024);
    let settled = false;
    const conn = new LonglinkConn({ write: (b) => socket.write(lengthPrefixed(b)), close: () => socket.destroy() }, events, (err) => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve(conn);
    });
    socket.on('connect', () => conn.frame(LOGIN_ID, { case: 'login', value: { token } }));
    socket.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      for (let p = reader.next(); p; p = reader.next()) conn.onBytes(p);
    });
    socket.on('error', (e) => conn.drop(`socket error: ${e.message}`));
    socket.on('close', () => conn.drop('closed by the server'));
  });
}

function connectWs(url: URL, token: string, events: ConnEvents): Promise<LonglinkConn> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let settled = false;
    const conn = new LonglinkConn({ write: (b) => ws.send(b), close: () => ws.terminate() }, events, (err) => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve(conn);
    });
    ws.on('open', () => conn.frame(LOGIN_ID, { case: 'login', value: { token } }));
    ws.on('message', (data: Buffer) => conn.onBytes(data));
    ws.on('error', (e) => conn.drop(`socket error: ${e.message}`));
    ws.on('close', (code) => conn.drop(`closed by the server (${code})`));
  });
}

export const longlinkAdapter: Adapter = {
  connect(t: ConnectTarget, _user: string, events: ConnEvents): Promise<BenchConn> {
    const url = new URL(t.url);
    return url.protocol === 'tcp:' ? connectTcp(url, t.token ?? '', events) : connectWs(url, t.token ?? '', events);
  },
};

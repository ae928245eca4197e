// Setting up state a scenario needs before the load starts, through the
// protocol like any client: for now, a group (GroupRequest.create).
import net from 'node:net';
import { TokenService } from '../../src/auth/tokens.js';
import { LengthPrefixedReader, decodeFrame, encodeFrame, lengthPrefixed, makeFrame, type Frame, type FrameBodyInit } from '../../src/protocol/index.js';

/** Members one group request may name (the server's limit). */
const MEMBERS_PER_REQUEST = 1000;

/**
 * Log in as `owner` (a separate device) over TCP, create a group with
 * `members` (created with the first 1,000, the rest added 1,000 per request),
 * return its id.
 */
export async function createGroup(tcpUrl: string, tokenSecret: string, owner: string, members: string[], name = 'bench'): Promise<string> {
  const url = new URL(tcpUrl);
  const { token } = await new TokenService(tokenSecret).issue(owner, 'setup', 'other', 3600);
  const socket = net.connect({ host: url.hostname, port: Number(url.port) });
  const reader = new LengthPrefixedReader(64 * 1024 * 1024);
  const waiting = new Map<number, (f: Frame) => void>();
  socket.on('data', (chunk: Buffer) => {
    reader.push(chunk);
    for (let p = reader.next(); p; p = reader.next()) {
      const f = decodeFrame(p);
      waiting.get(f.id)?.(f);
    }
  });
  const request = (id: number, body: FrameBodyInit) => new Promise<Frame>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no reply to ${body?.case}`)), 30_000);
    waiting.set(id, (f) => {
      clearTimeout(t);
      resolve(f);
    });
    socket.write(lengthPrefixed(encodeFrame(makeFrame(id, body))));
  });
  try {
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const login = await request(1, { case: 'login', value: { token } });
    if (login.body.case !== 'loginResult') throw new Error(`login failed: ${JSON.stringify(login.body.value)}`);
    const others = members.filter((m) => m !== owner);
    const first = others.slice(0, MEMBERS_PER_REQUEST - 1);
    const created = await request(2, { case: 'group', value: { op: { case: 'create', value: { name, memberIds: first } } } });
    if (created.body.case !== 'groupResult' || !created.body.value.group) throw new Error(`group create failed: ${JSON.stringify(created.body.value)}`);
    const groupId = created.body.value.group.groupId;
    for (let i = first.length, id = 3; i < others.length; i += MEMBERS_PER_REQUEST, id++) {
      const userIds = others.slice(i, i + MEMBERS_PER_REQUEST);
      const added = await request(id, { case: 'group', value: { op: { case: 'add', value: { groupId, userIds } } } });
      if (added.body.case !== 'groupResult') throw new Error(`group add failed: ${JSON.stringify(added.body.value)}`);
    }
    return groupId;
  } finally {
    socket.destroy();
  }
}

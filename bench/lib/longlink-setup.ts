// Setting up state a scenario needs before the load starts, through the
// protocol like any client: for now, a group (GroupRequest.create).
import net from 'node:net';
import { TokenService } from '../../src/auth/tokens.js';
import { LengthPrefixedReader, decodeFrame, encodeFrame, lengthPrefixed, makeFrame, type Frame, type FrameBodyInit } from '../../src/protocol/index.js';

/** Log in as `owner` (a separate device) over TCP, create a group with `members`, return its id. */
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
    const created = await request(2, { case: 'group', value: { op: { case: 'create', value: { name, memberIds: members.filter((m) => m !== owner) } } } });
    if (created.body.case !== 'groupResult' || !created.body.value.group) throw new Error(`group create failed: ${JSON.stringify(created.body.value)}`);
    return created.body.value.group.groupId;
  } finally {
    socket.destroy();
  }
}

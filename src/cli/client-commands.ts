// Client subcommands (listen, send), built on the SDK.
import { randomBytes } from 'node:crypto';
import { createClient, listGateways, requestToken, LonglinkError, ErrorCode, errorName, type LonglinkClient } from '../client/index.js';

export interface ClientFlags {
  server: string;
  adminKey: string;
  user: string;
  device: string;
  transport: 'tcp' | 'ws';
  gateway?: string;
}

export function clientFlags(flags: Record<string, string | undefined>, defaultDevice: string): ClientFlags {
  const user = flags.user;
  if (!user) throw new UsageError('--user is required');
  const adminKey = flags['admin-key'] ?? process.env.LONGLINK_ADMIN_KEY;
  if (!adminKey) throw new UsageError('set LONGLINK_ADMIN_KEY (printed by `longlink start`) to get tokens');
  const transport = flags.transport ?? 'tcp';
  if (transport !== 'tcp' && transport !== 'ws') throw new UsageError('--transport must be tcp or ws');
  return {
    server: flags.server ?? process.env.LONGLINK_SERVER ?? 'http://127.0.0.1:8080',
    adminKey,
    user,
    device: flags.device ?? defaultDevice,
    transport,
    gateway: flags.gateway,
  };
}

export class UsageError extends Error {}

async function gatewayUrl(f: ClientFlags): Promise<string> {
  if (f.gateway) return f.gateway;
  const gateways = await listGateways(f.server);
  for (const g of gateways) {
    const url = f.transport === 'tcp' ? g.tcp_url : g.ws_url;
    if (url) return url;
  }
  throw new LonglinkError(ErrorCode.UNAVAILABLE, `no live gateway with ${f.transport} at ${f.server}`);
}

async function connect(f: ClientFlags, autoSync: boolean): Promise<LonglinkClient> {
  const url = await gatewayUrl(f);
  const client = createClient({
    url,
    autoSync,
    clientVersion: 'longlink-cli',
    token: async () => (await requestToken(f.server, f.adminKey, { user_id: f.user, device_id: f.device, platform: 'cli' })).token,
  });
  client.on('kick', (err) => console.error(JSON.stringify({ type: 'kick', code: err.codeName, reason: err.message })));
  client.on('error', (err) => console.error(JSON.stringify({ type: 'error', code: err.codeName, message: err.message })));
  await client.connect();
  return client;
}

export async function runListen(flags: Record<string, string | undefined>): Promise<void> {
  const f = clientFlags(flags, 'cli');
  const client = await connect(f, true);
  client.on('message', (m) => {
    process.stdout.write(`${JSON.stringify({
      type: 'message', conversation: m.conversationId, seq: m.seq, from: m.fromUser, device: m.fromDevice,
      text: m.text, time: new Date(m.sentAtMs).toISOString(), id: m.serverMsgId,
    })}\n`);
  });
  client.on('state', (state, detail) => console.error(JSON.stringify({ type: 'state', state, ...detail })));
  client.on('synced', () => console.error(JSON.stringify({ type: 'synced' })));
  const session = client.session!;
  console.error(JSON.stringify({ type: 'online', user: session.userId, device: session.deviceId, node: session.nodeId }));
  const stop = () => {
    void client.close().then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

export async function runSend(flags: Record<string, string | undefined>): Promise<number> {
  const f = clientFlags(flags, `cli-send-${randomBytes(3).toString('hex')}`);
  const to = flags.to;
  const text = flags.text;
  if (!to) throw new UsageError('--to is required');
  if (text === undefined) throw new UsageError('--text is required');
  const count = flags.count === undefined ? 1 : Number(flags.count);
  if (!Number.isInteger(count) || count < 1 || count > 1_000_000) throw new UsageError('--count must be an integer ≥ 1');
  const timeoutMs = Number(flags.timeout ?? 60) * 1000;
  const client = await connect(f, false);
  const sends = [];
  for (let i = 1; i <= count; i++) sends.push(client.send({ to, text: count === 1 ? text : `${text}-${i}` }));
  let failed = 0;
  const deadline = setTimeout(() => {
    console.error(JSON.stringify({ type: 'error', code: 'TIMEOUT', message: `${client.pendingSends} sends not acked within ${timeoutMs} ms` }));
    process.exit(1);
  }, timeoutMs);
  for (const p of sends) {
    try {
      const ack = await p;
      process.stdout.write(`${JSON.stringify({
        type: 'ack', conversation: ack.conversationId, seq: ack.seq, client_msg_id: ack.clientMsgId,
        id: ack.serverMsgId, time: new Date(ack.sentAtMs).toISOString(), duplicate: ack.duplicate,
      })}\n`);
    } catch (err) {
      failed++;
      const code = err instanceof LonglinkError ? errorName(err.code) : 'ERROR';
      console.error(JSON.stringify({ type: 'error', code, message: (err as Error).message }));
    }
  }
  clearTimeout(deadline);
  await client.close();
  return failed === 0 ? 0 : 1;
}

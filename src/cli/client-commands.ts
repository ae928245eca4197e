// Client subcommands (listen, send), built on the SDK.
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { join } from 'node:path';
import {
  createClient, gatewayPicker, nodeFetch, requestToken, uploadFile, downloadFile, LonglinkError, errorName, groupConversationId, groupIdOf,
  type LonglinkClient, type ChatMessage, type EditOptions, type GroupInfo, type HttpOptions, type NodeClientOptions, type SendOptions,
} from '../client/index.js';
import { exitAfterFlush } from './exit.js';
import { paced } from './pace.js';
import { UsageError } from './args.js';

export interface ClientFlags {
  server: string;
  adminKey: string;
  user: string;
  device: string;
  transport: 'tcp' | 'ws';
  gateway?: string;
  /** The CA certificates (PEM) of --ca / LONGLINK_CA, trusted for https, tls and wss instead of Node's default roots. */
  ca?: Buffer;
}

export function clientFlags(flags: Record<string, string | undefined>, defaultDevice: string): ClientFlags {
  const user = flags.user;
  if (!user) throw new UsageError('--user is required');
  const server = flags.server ?? process.env.LONGLINK_SERVER ?? 'http://127.0.0.1:8080';
  const adminKey = flags['admin-key'] ?? process.env.LONGLINK_ADMIN_KEY ?? quickStartAdminKey(server, flags['data-dir'] ?? process.env.LONGLINK_DATA_DIR ?? './data');
  if (!adminKey) {
    throw new UsageError('set LONGLINK_ADMIN_KEY (printed by `longlink start`) to get tokens; for a local quick start, run this in the folder `longlink start` ran in (it reads the key from data/dev-secrets.json), or give --data-dir');
  }
  const transport = flags.transport ?? 'tcp';
  if (transport !== 'tcp' && transport !== 'ws') throw new UsageError('--transport must be tcp or ws');
  return {
    server,
    adminKey,
    user,
    device: flags.device ?? defaultDevice,
    transport,
    gateway: flags.gateway,
    ca: readCa(flags.ca ?? process.env.LONGLINK_CA),
  };
}

function readCa(file: string | undefined): Buffer | undefined {
  if (!file) return undefined;
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read the CA file ${file}: ${(err as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new UsageError(`${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return pem;
}

/**
 * The admin key a local quick start keeps in its data folder
 * (dev-secrets.json, readable by its user only), for a server on this machine:
 * the CLI then needs no LONGLINK_ADMIN_KEY in every terminal.
 */
function quickStartAdminKey(server: string, dataDir: string): string | undefined {
  let host: string;
  try {
    host = new URL(server).hostname;
  } catch {
    return undefined;
  }
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '[::1]') return undefined;
  try {
    const saved = JSON.parse(readFileSync(join(dataDir, 'dev-secrets.json'), 'utf8')) as { adminKey?: unknown };
    return typeof saved.adminKey === 'string' && saved.adminKey !== '' ? saved.adminKey : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What every client command connects with: the gateway (--gateway, or one the
 * API picks on every (re)connect), a fresh token from the API, and the CA to
 * trust for https, tls and wss (--ca).
 */
export function connectOptions(f: ClientFlags): Pick<NodeClientOptions, 'url' | 'token' | 'ca'> {
  const http: HttpOptions = f.ca ? { fetch: nodeFetch({ ca: f.ca }) } : {};
  // Several datacenters: --server a,b names their APIs, this one's first; a client whose datacenter is gone goes on
  // through the next (and through any other that discovery names).
  const servers = f.server.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return {
    url: f.gateway ?? gatewayPicker(servers, f.transport, http),
    token: async () => {
      let failure: unknown;
      for (const server of servers) {
        try {
          return (await requestToken(server, f.adminKey, { user_id: f.user, device_id: f.device, platform: 'cli' }, { ...http, timeoutMs: 5000 })).token;
        } catch (err) {
          failure = err;
        }
      }
      throw failure;
    },
    ca: f.ca,
  };
}

async function connect(f: ClientFlags, autoSync: boolean): Promise<LonglinkClient> {
  const client = createClient({ ...connectOptions(f), autoSync, clientVersion: 'longlink-cli' });
  client.on('kick', (err) => console.error(JSON.stringify({ type: 'kick', code: err.codeName, reason: err.message })));
  client.on('error', (err) => console.error(JSON.stringify({ type: 'error', code: err.codeName, message: err.message })));
  await client.connect();
  return client;
}

function groupOf(conversationId: string): string | undefined {
  return groupIdOf(conversationId);
}

function line(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

/**
 * One JSON line per message or event, its `type` saying which: message (text), custom (a custom content type),
 * reply, forward | edit | delete | recall | members | receipt | typing | presence | broadcast.
 */
function messageLine(m: ChatMessage): Record<string, unknown> {
  const where = { conversation: m.conversationId, group: groupOf(m.conversationId), seq: m.seq, time: new Date(m.sentAtMs).toISOString() };
  if (m.event?.type === 'recalled') return { type: 'recall', ...where, target_seq: m.event.targetSeq, by: m.event.actor };
  if (m.event?.type === 'deleted') return { type: 'delete', ...where, target_seq: m.event.targetSeq, by: m.event.actor };
  if (m.event?.type === 'hidden') return { type: 'hide', conversation: m.event.targetConversationId, target_seq: m.event.targetSeq, time: where.time };
  if (m.event?.type === 'edited') {
    return { type: 'edit', ...where, target_seq: m.event.targetSeq, by: m.event.actor, text: m.event.text ?? '', ...contentFields(m.event.content) };
  }
  if (m.event) {
    return {
      type: 'members', action: m.event.type, ...where, actor: m.event.actor, users: m.event.userIds ?? [],
      name: m.event.name, role: m.event.role, muted: m.event.muted,
    };
  }
  const c = m.content;
  const type = c?.type ? 'custom' : c?.forward ? 'forward' : c?.replyToSeq ? 'reply' : 'message';
  return {
    type, ...where, from: m.fromUser, device: m.fromDevice, text: m.text, id: m.serverMsgId, ...contentFields(c),
    reply_to: c?.replyToSeq, quote: m.reply ? { from: m.reply.fromUser, text: m.reply.text, gone: m.reply.gone } : undefined,
    forwarded_from: c?.forward ? { conversation: c.forward.conversationId, seq: c.forward.seq, from: c.forward.fromUser } : undefined,
    edited: m.editedAtMs !== undefined ? new Date(m.editedAtMs).toISOString() : undefined,
    recalled: m.recalledBy !== undefined || undefined, deleted: m.deletedBy !== undefined || undefined, hidden: m.hidden,
    reactions: m.reactions,
  };
}

/** A message's custom type, payload (JSON when it is JSON text, else base64) and mentions, as listen prints them. */
function contentFields(c: ChatMessage['content']): Record<string, unknown> {
  if (!c) return {};
  const out: Record<string, unknown> = {};
  if (c.type) out.content_type = c.type;
  if (c.payload) {
    const text = new TextDecoder().decode(c.payload);
    try {
      out.payload = JSON.parse(text) as unknown;
    } catch {
      out.payload_base64 = Buffer.from(c.payload).toString('base64');
    }
  }
  if (c.mentions) out.mentions = c.mentions;
  if (c.mentionAll) out.mention_all = true;
  if (c.attachments) out.files = c.attachments.map(fileLine);
  return out;
}

/** A file as the CLI prints it. */
function fileLine(a: { fileId: string; name: string; mime: string; size: number; width: number; height: number }): Record<string, unknown> {
  return { file_id: a.fileId, name: a.name, mime: a.mime, size: a.size, ...(a.width > 0 ? { width: a.width, height: a.height } : {}) };
}

/** The HTTP API the CLI talks to (the first of --server), with the CA of --ca, and a token of the user for it. */
async function apiAccess(f: ClientFlags): Promise<{ server: string; token: string; http: HttpOptions }> {
  const server = f.server.split(',')[0]!.trim();
  const http: HttpOptions = f.ca ? { fetch: nodeFetch({ ca: f.ca }) } : {};
  const { token } = await requestToken(server, f.adminKey, { user_id: f.user, device_id: f.device, platform: 'cli' }, { ...http, timeoutMs: 5000 });
  return { server, token, http };
}

/** Prints a refusal of the API as the client commands print theirs; other errors are thrown. */
function refused(err: unknown): number {
  if (!(err instanceof LonglinkError)) throw err;
  console.error(JSON.stringify({ type: 'error', code: err.codeName, message: err.message }));
  return 1;
}

/** --payload-type, --payload (JSON text, sent as is), --mention, --mention-all as send or edit options. */
function contentFlags(flags: Record<string, string | undefined>): EditOptions {
  const out: EditOptions = {};
  if (flags['payload-type'] !== undefined) out.type = flags['payload-type'];
  if (flags.payload !== undefined) {
    if (out.type === undefined) throw new UsageError('--payload needs --payload-type');
    try {
      JSON.parse(flags.payload);
    } catch {
      throw new UsageError('--payload must be JSON (it is delivered as is)');
    }
    out.payload = flags.payload;
  }
  if (flags.mention !== undefined) out.mentions = flags.mention.split(',').map((u) => u.trim()).filter(Boolean);
  if (flags['mention-all'] !== undefined) out.mentionAll = true;
  return out;
}

function seqFlag(flags: Record<string, string | undefined>, name: string): number {
  const seq = Number(flags[name]);
  if (!Number.isSafeInteger(seq) || seq < 1) throw new UsageError(`--${name} must be a seq (a whole number ≥ 1)`);
  return seq;
}

/** Runs one request as a fresh CLI device and prints its line(s); a refusal prints its code and exits 1. */
async function oneRequest(
  flags: Record<string, string | undefined>, work: (c: LonglinkClient) => Promise<Record<string, unknown> | Record<string, unknown>[]>,
): Promise<number> {
  const client = await connect(clientFlags(flags, `cli-${randomBytes(3).toString('hex')}`), false);
  try {
    const out = await work(client);
    for (const o of Array.isArray(out) ? out : [out]) line(o);
    return 0;
  } catch (err) {
    if (!(err instanceof LonglinkError)) throw err;
    console.error(JSON.stringify({ type: 'error', code: errorName(err.code), message: err.message }));
    return 1;
  } finally {
    await client.close();
  }
}

/** `edit`: a new version of one of your messages. */
export async function runEdit(flags: Record<string, string | undefined>): Promise<number> {
  const conversation = flags.conversation;
  if (!conversation) throw new UsageError('--conversation is required');
  const seq = seqFlag(flags, 'seq');
  const options = { ...contentFlags(flags), text: flags.text ?? '' };
  return oneRequest(flags, async (c) => {
    await c.edit(conversation, seq, options);
    return { type: 'edited', conversation, seq };
  });
}

/** `delete`: delete a message for everyone. */
export async function runDelete(flags: Record<string, string | undefined>): Promise<number> {
  const conversation = flags.conversation;
  if (!conversation) throw new UsageError('--conversation is required');
  const seq = seqFlag(flags, 'seq');
  const forMe = flags['for-me'] !== undefined;
  return oneRequest(flags, async (c) => {
    if (forMe) await c.deleteForMe(conversation, seq);
    else await c.deleteMessage(conversation, seq);
    return { type: 'deleted', conversation, seq, for_me: forMe || undefined };
  });
}

/** `react`: an emoji on a message (--off: taken back). */
export async function runReact(flags: Record<string, string | undefined>): Promise<number> {
  const conversation = flags.conversation;
  if (!conversation) throw new UsageError('--conversation is required');
  const seq = seqFlag(flags, 'seq');
  const emoji = flags.emoji;
  if (!emoji) throw new UsageError('--emoji is required');
  return oneRequest(flags, async (c) => {
    if (flags.off !== undefined) await c.unreact(conversation, seq, emoji);
    else await c.react(conversation, seq, emoji);
    return { type: flags.off !== undefined ? 'unreacted' : 'reacted', conversation, seq, emoji };
  });
}

/** `profile`: set yours (--name, --avatar) or read others' (--of V,W); one line per profile. */
export async function runProfile(flags: Record<string, string | undefined>): Promise<number> {
  const of = flags.of?.split(',').map((u) => u.trim()).filter(Boolean);
  if (of !== undefined && (flags.name !== undefined || flags.avatar !== undefined)) throw new UsageError('give --of, or --name/--avatar, not both');
  if (of === undefined && flags.name === undefined && flags.avatar === undefined) throw new UsageError('give --name and/or --avatar to set yours, or --of V,W to read');
  return oneRequest(flags, async (client) => {
    const profiles = of !== undefined ? await client.profiles(of) : [await client.setProfile({ name: flags.name ?? '', avatarUrl: flags.avatar ?? '' })];
    return profiles.map((p) => ({ type: 'profile', user: p.userId, name: p.name, avatar_url: p.avatarUrl, updated: p.updatedAtMs > 0 ? new Date(p.updatedAtMs).toISOString() : null }));
  });
}

/** `block`: block --peer (unblock with --off); prints whom the user blocks after it. */
export async function runBlock(flags: Record<string, string | undefined>): Promise<number> {
  const peer = flags.peer;
  if (peer === undefined && flags.off !== undefined) throw new UsageError('--off needs --peer');
  return oneRequest(flags, async (c) => {
    const blocked = peer === undefined ? await c.blocked() : flags.off !== undefined ? await c.unblock(peer) : await c.block(peer);
    return { type: 'blocked', user: flags.user, blocked };
  });
}

export async function runListen(flags: Record<string, string | undefined>): Promise<void> {
  const f = clientFlags(flags, 'cli');
  const client = await connect(f, true);
  client.on('message', (m) => line(messageLine(m)));
  client.on('receipt', (r) => line({ type: 'receipt', conversation: r.conversationId, group: groupOf(r.conversationId), user: r.userId, seq: r.seq }));
  client.on('typing', (t) => line({ type: 'typing', conversation: t.conversationId, user: t.userId }));
  client.on('reactions', (r) => line({ type: 'reaction', conversation: r.conversationId, group: groupOf(r.conversationId), seq: r.seq, reactions: r.reactions }));
  client.on('presence', (p) => line({ type: 'presence', user: p.userId, online: p.online, platforms: p.platforms }));
  client.on('broadcast', (b) => line({ type: 'broadcast', id: b.id, text: b.text, time: new Date(b.sentAtMs).toISOString() }));
  client.on('state', (state, detail) => console.error(JSON.stringify({ type: 'state', state, ...detail })));
  client.on('synced', () => console.error(JSON.stringify({ type: 'synced' })));
  const watch = flags.watch?.split(',').filter(Boolean) ?? [];
  if (watch.length > 0) for (const p of await client.watchPresence(watch)) line({ type: 'presence', user: p.userId, online: p.online, platforms: p.platforms });
  const session = client.session!;
  console.error(JSON.stringify({ type: 'online', user: session.userId, device: session.deviceId, node: session.nodeId }));
  const stop = () => {
    void client.close().then(() => exitAfterFlush(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

/** `conversations`: one line per conversation, most recent first. */
export async function runConversations(flags: Record<string, string | undefined>): Promise<number> {
  const client = await connect(clientFlags(flags, `cli-${randomBytes(3).toString('hex')}`), false);
  for (const c of await client.conversations()) {
    const last = c.lastMessage;
    line({
      type: 'conversation', conversation: c.conversationId, kind: c.kind, group: c.groupId, name: c.name, peer: c.peerUser,
      unread: c.unread, last_seq: c.lastSeq, read_seq: c.readSeq, peer_read_seq: c.peerReadSeq,
      last: last ? messageLine(last) : null,
    });
  }
  await client.close();
  return 0;
}

/** `read`: mark a conversation read up to its latest message (or --seq). */
export async function runRead(flags: Record<string, string | undefined>): Promise<number> {
  const conversation = flags.conversation ?? (flags.group ? groupConversationId(flags.group) : undefined);
  if (!conversation) throw new UsageError('--conversation (or --group) is required');
  const client = await connect(clientFlags(flags, `cli-${randomBytes(3).toString('hex')}`), false);
  await client.markRead(conversation, flags.seq ? Number(flags.seq) : 0);
  const c = (await client.conversations()).find((x) => x.conversationId === conversation);
  line({ type: 'read', conversation, read_seq: c?.readSeq ?? 0, unread: c?.unread ?? 0 });
  await client.close();
  return 0;
}

/** `group create|add|remove|leave|dismiss|info|role|mute`: prints the group after the change. */
export async function runGroup(action: string | undefined, flags: Record<string, string | undefined>): Promise<number> {
  const members = (flags.members ?? '').split(',').map((m) => m.trim()).filter(Boolean);
  const groupId = flags.group;
  const needGroup = () => {
    if (!groupId) throw new UsageError('--group is required');
    return groupId;
  };
  const f = clientFlags(flags, `cli-${randomBytes(3).toString('hex')}`);
  let run: (c: LonglinkClient) => Promise<GroupInfo>;
  switch (action) {
    case 'create':
      if (!flags.name) throw new UsageError('--name is required');
      run = (c) => c.createGroup(flags.name!, members);
      break;
    case 'add':
      run = (c) => c.addMembers(needGroup(), members);
      break;
    case 'remove':
      run = (c) => c.removeMembers(needGroup(), members);
      break;
    case 'leave':
      run = (c) => c.leaveGroup(needGroup());
      break;
    case 'dismiss':
      run = (c) => c.dismissGroup(needGroup());
      break;
    case 'info':
      run = (c) => c.groupInfo(needGroup());
      break;
    case 'role': {
      const role = flags.role;
      if (role !== 'member' && role !== 'admin' && role !== 'owner') throw new UsageError('--role must be member, admin or owner');
      if (!flags.member) throw new UsageError('--member is required');
      run = (c) => c.setRole(needGroup(), flags.member!, role);
      break;
    }
    case 'mute':
    case 'unmute':
      run = (c) => c.mute(needGroup(), action === 'mute', flags.member ?? '');
      break;
    default:
      throw new UsageError('group needs an action: create, add, remove, leave, dismiss, info, role, mute, unmute');
  }
  const client = await connect(f, false);
  try {
    const g = await run(client);
    line({
      type: 'group', group: g.groupId, conversation: g.conversationId, name: g.name, owner: g.owner,
      members: g.members.map((m) => ({ user: m.userId, role: m.role, muted: m.muted })), muted_all: g.mutedAll, dismissed: g.dismissed,
    });
    return 0;
  } finally {
    await client.close();
  }
}

export async function runSend(flags: Record<string, string | undefined>): Promise<number> {
  const f = clientFlags(flags, `cli-send-${randomBytes(3).toString('hex')}`);
  const to = flags.to;
  const group = flags.group;
  const content: Partial<SendOptions> = contentFlags(flags);
  if (flags['reply-to'] !== undefined) content.replyTo = seqFlag(flags, 'reply-to');
  if ((flags['forward-conversation'] === undefined) !== (flags['forward-seq'] === undefined)) {
    throw new UsageError('give --forward-conversation and --forward-seq together');
  }
  if (flags['forward-conversation'] !== undefined) content.forward = { conversationId: flags['forward-conversation'], seq: seqFlag(flags, 'forward-seq') };
  const path = flags.file;
  const text = flags.text ?? (content.type !== undefined || content.forward !== undefined || path !== undefined ? '' : undefined);
  if ((to === undefined) === (group === undefined)) throw new UsageError('give --to USER or --group ID');
  if (text === undefined) throw new UsageError('--text is required (unless --payload-type or a forward is given)');
  const count = flags.count === undefined ? 1 : Number(flags.count);
  if (!Number.isInteger(count) || count < 1 || count > 1_000_000) throw new UsageError('--count must be a whole number in 1..1000000');
  const timeoutMs = Number(flags.timeout ?? 60) * 1000;
  if (!(timeoutMs > 0)) throw new UsageError('--timeout must be a number of seconds > 0');
  const rate = flags.rate === undefined ? 0 : Number(flags.rate);
  if (!Number.isFinite(rate) || rate < 0) throw new UsageError('--rate must be a number of messages per second ≥ 0 (0: all at once)');
  if (path !== undefined) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (err) {
      throw new UsageError(`cannot read ${path}: ${(err as Error).message}`);
    }
    try {
      const { server, token, http } = await apiAccess(f);
      const file = await uploadFile(server, token, bytes, { ...http, name: basename(path) });
      line({ type: 'upload', ...fileLine(file), sha256: file.sha256 });
      content.attachments = [file.fileId];
    } catch (err) {
      return refused(err);
    }
  }
  const client = await connect(f, false);
  const target = to !== undefined ? { to } : { groupId: group! };
  const deadline = setTimeout(() => {
    console.error(JSON.stringify({ type: 'error', code: 'TIMEOUT', message: `${client.pendingSends} sends not acked within ${timeoutMs} ms` }));
    exitAfterFlush(1);
  }, timeoutMs);
  // Without --rate every send is written at once (pipelined); with it, evenly spaced.
  const sends = paced(count, rate, (k) => client.send({ ...target, ...content, text: count === 1 || text === '' ? text : `${text}-${k + 1}` }));
  let failed = 0;
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

/** `search`: messages you may read matching every word (the last as a prefix), best first; one JSON line per hit. */
export async function runSearch(flags: Record<string, string | undefined>): Promise<number> {
  const query = flags.query;
  if (!query) throw new UsageError('--query is required');
  const limit = flags.limit === undefined ? undefined : Number(flags.limit);
  return oneRequest(flags, async (c) => {
    const page = await c.search(query, { conversationId: flags.conversation, limit, cursor: flags.cursor });
    const lines: Record<string, unknown>[] = page.hits.map((h) => ({ ...messageLine(h.message), type: 'hit', snippet: h.snippet }));
    if (page.nextCursor !== '') lines.push({ type: 'more', cursor: page.nextCursor });
    return lines;
  });
}

/** `download`: a file of a message you may read (or one you uploaded), written to --out (default: its name). */
export async function runDownload(flags: Record<string, string | undefined>): Promise<number> {
  const f = clientFlags(flags, `cli-${randomBytes(3).toString('hex')}`);
  const id = flags.file;
  if (!id) throw new UsageError('--file ID is required');
  try {
    const { server, token, http } = await apiAccess(f);
    const file = await downloadFile(server, token, id, { ...http, preview: flags.preview !== undefined });
    const out = flags.out ?? basename(file.name);
    writeFileSync(out, file.bytes);
    line({ type: 'downloaded', file_id: id, name: file.name, mime: file.mime, size: file.bytes.length, path: out });
    return 0;
  } catch (err) {
    return refused(err);
  }
}

/** `notify`: mute or unmute a conversation's push notifications (--off: unmute). */
export async function runNotify(flags: Record<string, string | undefined>): Promise<number> {
  const conversation = flags.conversation;
  if (!conversation) throw new UsageError('--conversation is required');
  const muted = flags.off === undefined;
  return oneRequest(flags, async (c) => {
    await c.muteNotifications(conversation, muted);
    return { type: muted ? 'muted' : 'unmuted', conversation };
  });
}

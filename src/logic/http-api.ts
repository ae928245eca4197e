// The HTTP API served by logic: tokens, business push, gateway discovery,
// the cluster's nodes (admin), health. JSON in and out; every error is {"error": {"code", "message"}}
// with a stable code name.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { timingSafeEqual, createHash } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode, ID_PATTERN, LonglinkError, SYSTEM_USER, groupConversationId, isValidId } from '../protocol/index.js';
import { HttpError, httpError, wireError } from '../protocol/http-errors.js';
import type { TokenService } from '../auth/tokens.js';
import { byRoleThenId, type NodeInfo, type Registry } from '../engines/registry.js';
import { down, type Bus, type ShardAdmin } from '../engines/bus.js';
import type { BusRequester } from './bus-requests.js';
import { checkSend } from './pipeline.js';
import { DEFAULTS } from '../config.js';
import type { Sessions } from '../engines/sessions.js';
import type { DatacenterStore } from '../engines/store.js';
import { revokeTokens } from '../auth/revocation.js';
import { encodeFrame, makeFrame } from '../protocol/index.js';
import { log as rootLog } from '../observability/log.js';
import type { RiskControl } from '../risk/control.js';
import { MAX_RULES_BYTES, RulesError } from '../risk/rules.js';
import type { FilesApi } from './files-api.js';

const log = rootLog.child({ component: 'http' });

export interface HttpApiOptions {
  nodeId: string;
  adminKey: string;
  tokenTtlSeconds: number;
  /** Largest message text, UTF-8 bytes (checked for every recipient before any is sent). */
  maxTextBytes: number;
  /** Largest request body, bytes. @default DEFAULTS.maxBodyBytes */
  maxBodyBytes?: number;
  /**
   * Serve `POST /api/v1/dev/token`: a token for any user without the admin
   * key, for the web page's dev login. Only for a dev server. @default false
   */
  devLogin?: boolean;
  /** This node's datacenter: discovery hands out its gateways first. @default 'dc1' */
  dc?: string;
}

export interface HttpApiDeps {
  tokens: TokenService;
  registry: Registry;
  bus: Bus;
  /** Writes go to logic through the bus, in their partition, like a client's. */
  requests: BusRequester;
  /** For revocations (POST /api/v1/revoke). */
  sessions: Sessions;
  /** Where revocations are kept for the other datacenters to copy. @default not kept */
  store?: Pick<DatacenterStore, 'putRevocation'>;
  /** The risk rules and audit trail (/api/v1/risk/...); absent: those routes answer NOT_FOUND. */
  risk?: RiskControl;
  /** The other datacenters' registries (discovery falls back to their gateways, and lists their APIs). */
  peerRegistries?: ReadonlyMap<string, Registry>;
  /** Several datacenters: who serves which homes, and moving them (/api/v1/dc/...). */
  datacenters?: DatacenterAdmin;
  /** Uploads and downloads (/api/v1/files...); absent: those routes answer NOT_FOUND. */
  files?: FilesApi;
}

/** What the operator's /api/v1/dc routes do (src/dc/failover.ts). */
export interface DatacenterAdmin {
  status(): Promise<unknown>;
  failover(dc: string, to: string | undefined): Promise<unknown>;
  failback(dc: string): Promise<unknown>;
}

const DcBody = z.object({ dc: z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'a datacenter name'), to: z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/).optional() }).strict();

const userId = z.string().regex(ID_PATTERN, 'must be 1-64 characters of A-Z a-z 0-9 _ . @ -');

const TokenBody = z.object({
  user_id: userId.refine((u) => u !== SYSTEM_USER, 'is reserved'),
  device_id: userId.optional(),
  platform: z.string().min(1).max(32).optional(),
  ttl_seconds: z.number().int().min(10).max(90 * 86400).optional(),
}).strict();

const RevokeBody = z.object({
  user_id: userId,
  device_id: userId.optional(),
}).strict();

const ProfileBody = z.object({
  name: z.string().max(256).optional(),
  avatar_url: z.string().max(2048).optional(),
}).strict();

/** `/api/v1/users/{id}/profile`: the user id, or undefined for another path. */
function profilePath(path: string): string | undefined {
  const m = /^\/api\/v1\/users\/([^/]+)\/profile$/.exec(path);
  if (!m) return undefined;
  let id: string;
  try {
    id = decodeURIComponent(m[1]!);
  } catch {
    return '';
  }
  return id;
}

const DevTokenBody = z.object({
  user_id: userId.refine((u) => u !== SYSTEM_USER, 'is reserved'),
  device_id: userId.optional(),
  platform: z.string().min(1).max(32).optional(),
}).strict();

const MessageBody = z.object({
  from: userId.optional(),
  to: userId.optional(),
  to_users: z.array(userId).min(1).max(1000).optional(),
  group_id: userId.optional(),
  // Empty text is refused by the send check itself (TEXT_EMPTY, as on the wire).
  text: z.string(),
  client_msg_id: z.string().min(1).max(100).optional(),
}).strict().refine((b) => [b.to, b.to_users, b.group_id].filter((t) => t !== undefined).length === 1, {
  message: 'give exactly one of to, to_users or group_id',
});

const GrowBody = z.object({ count: z.number().int().min(2).max(4096) }).strict();

const ReplayBody = z.object({
  ids: z.array(z.string().min(1).max(64)).max(10_000).optional(),
}).strict();

const BroadcastBody = z.object({
  text: z.string().min(1).max(16 * 1024),
}).strict();

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class HttpApi {
  private readonly adminDigest: Buffer;

  constructor(
    private readonly options: HttpApiOptions,
    private readonly deps: HttpApiDeps,
  ) {
    this.adminDigest = digest(options.adminKey);
  }

  /** The request listener; answers every request, never throws. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    this.route(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) return send(res, err.status, { error: { code: err.code, message: err.message } });
      if (err instanceof LonglinkError) {
        const { status, body } = wireError(err.code, err.message);
        return send(res, status, body);
      }
      log.error({ err, method: req.method, path: (req.url ?? '').split('?')[0] }, 'request failed');
      const { status, body } = httpError('INTERNAL', 'internal error');
      send(res, status, body);
    });
  };

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    if (path === '/healthz' && method === 'GET') return send(res, 200, { status: 'ok', node: this.options.nodeId });
    if (path === '/api/v1/gateways' && method === 'GET') return this.gateways(req, res);
    if (path === '/api/v1/nodes' && method === 'GET') return this.nodes(req, res);
    if (path === '/api/v1/tokens' && method === 'POST') return this.issueToken(req, res);
    if (path === '/api/v1/messages' && method === 'POST') return this.postMessage(req, res);
    if (path === '/api/v1/broadcast' && method === 'POST') return this.broadcast(req, res);
    if (path === '/api/v1/dev/token' && method === 'POST') return this.devToken(req, res);
    if (path === '/api/v1/revoke' && method === 'POST') return this.revoke(req, res);
    if (path === '/api/v1/dead-letters' && method === 'GET') return this.deadLetters(req, res);
    if (path === '/api/v1/dead-letters/replay' && method === 'POST') return this.replayDeadLetters(req, res);
    if (path === '/api/v1/shards' && method === 'GET') return this.shardStatus(req, res);
    if (path === '/api/v1/shards' && method === 'POST') return this.growShards(req, res);
    if (path === '/api/v1/dc' && method === 'GET') return this.dcStatus(req, res);
    if ((path === '/api/v1/dc/failover' || path === '/api/v1/dc/failback') && method === 'POST') return this.dcMove(req, res, path.endsWith('failover'));
    if (path === '/api/v1/risk/rules' && method === 'GET') return this.riskRules(req, res);
    if (path === '/api/v1/risk/rules' && method === 'PUT') return this.putRiskRules(req, res);
    if (path === '/api/v1/risk/audit' && method === 'GET') return this.riskAudit(req, res);
    if (path === '/api/v1/risk/webhook-secret' && method === 'GET') return this.webhookSecret(req, res);
    if (this.deps.files?.handles(path)) return this.deps.files.handle(req, res, path);
    const profileOf = profilePath(path);
    if (profileOf !== undefined && (method === 'GET' || method === 'PUT')) return this.profile(req, res, profileOf, method === 'PUT');
    if (profileOf !== undefined) throw new HttpError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
    if (path === '/healthz' || path.startsWith('/api/')) {
      const known = [
        '/healthz', '/api/v1/gateways', '/api/v1/nodes', '/api/v1/tokens', '/api/v1/messages', '/api/v1/broadcast', '/api/v1/dev/token', '/api/v1/revoke',
        '/api/v1/dead-letters', '/api/v1/dead-letters/replay', '/api/v1/shards', '/api/v1/dc', '/api/v1/dc/failover', '/api/v1/dc/failback', '/api/v1/risk/rules', '/api/v1/risk/audit', '/api/v1/risk/webhook-secret',
      ].includes(path);
      if (known) throw new HttpError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
    }
    throw new HttpError('NOT_FOUND', `no route for ${method} ${path}`);
  }

  private requireAdmin(req: IncomingMessage): void {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer (.+)$/.exec(header);
    if (!match) throw new HttpError('UNAUTHORIZED', 'missing Authorization: Bearer <admin key>');
    if (!timingSafeEqual(digest(match[1]!), this.adminDigest)) throw new HttpError('UNAUTHORIZED', 'wrong admin key');
  }

  private async issueToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const body = parse(TokenBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes));
    const deviceId = body.device_id ?? 'default';
    const platform = body.platform ?? 'other';
    const { token, expiresAtMs } = await this.deps.tokens.issue(body.user_id, deviceId, platform, body.ttl_seconds ?? this.options.tokenTtlSeconds);
    send(res, 200, { token, user_id: body.user_id, device_id: deviceId, platform, expires_at_ms: expiresAtMs });
  }

  /**
   * Log a user (every device) or one device out everywhere: its tokens issued
   * until now are refused at login and its open connections are kicked with
   * TOKEN_REVOKED (see src/auth/revocation.ts).
   */
  private async revoke(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const body = parse(RevokeBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes));
    const result = await revokeTokens(this.deps, body.user_id, body.device_id);
    send(res, 200, { user_id: body.user_id, device_id: body.device_id ?? null, revoked_before_ms: result.revokedBeforeMs });
  }

  /**
   * A user's profile as the business sets it (PUT: name and avatar_url, both
   * replacing what was there) or reads it (GET): done as that user, through
   * logic, as the user's own SetProfile would be.
   */
  private async profile(req: IncomingMessage, res: ServerResponse, userId: string, put: boolean): Promise<void> {
    this.requireAdmin(req);
    if (!isValidId(userId)) throw new HttpError('BAD_REQUEST', 'not a valid user id');
    const body = put ? parse(ProfileBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes)) : undefined;
    const reply = await this.deps.requests.request({
      userId, deviceId: '', trusted: true,
      body: body ? { case: 'setProfile', value: { name: body.name ?? '', avatarUrl: body.avatar_url ?? '' } } : { case: 'profileQuery', value: { userIds: [userId] } },
    });
    if (reply.body.case === 'error') throw new LonglinkError(reply.body.value.code, reply.body.value.message);
    if (reply.body.case !== 'profileResult') throw new LonglinkError(ErrorCode.INTERNAL, `unexpected reply ${reply.body.case ?? 'empty'}`);
    const p = reply.body.value.profiles[0]!;
    send(res, 200, { user_id: p.userId, name: p.name, avatar_url: p.avatarUrl, updated_at_ms: Number(p.updatedAtMs) });
  }

  /**
   * Dev login: a token for any user, no admin key. Refused unless this server
   * was started with it on (LONGLINK_DEV_LOGIN=1, as the quick start sets it).
   */
  private async devToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.options.devLogin !== true) {
      throw new HttpError('DEV_LOGIN_DISABLED',
        'dev login is off on this server (on only when asked for: LONGLINK_DEV_LOGIN=1, which a local `longlink start` with no secrets configured sets); '
        + 'get tokens from POST /api/v1/tokens with the admin key');
    }
    const body = parse(DevTokenBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes));
    const deviceId = body.device_id ?? 'web';
    const platform = body.platform ?? 'web';
    const { token, expiresAtMs } = await this.deps.tokens.issue(body.user_id, deviceId, platform, this.options.tokenTtlSeconds);
    send(res, 200, { token, user_id: body.user_id, device_id: deviceId, platform, expires_at_ms: expiresAtMs });
  }

  /**
   * Business push: a message from a user, or from the system sender, to one
   * user, each of a list of users (one 1:1 message each), or a group.
   * Answers once every message is stored.
   */
  private async postMessage(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const body = parse(MessageBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes));
    const from = body.from ?? SYSTEM_USER;
    const baseId = body.client_msg_id ?? `api-${crypto.randomUUID()}`;
    const sends = body.group_id !== undefined
      ? [{ toUser: '', conversationId: groupConversationId(body.group_id), clientMsgId: baseId }]
      : (body.to_users ?? [body.to!]).map((to, _i, all) => ({
        // One idempotency key per recipient, short enough whatever the user id.
        toUser: to, conversationId: '', clientMsgId: all.length > 1 ? `${baseId}:${createHash('sha256').update(to).digest('hex').slice(0, 16)}` : baseId,
      }));
    // Every recipient is checked before any is sent: one bad recipient refuses the whole request.
    for (const send of sends) checkSend({ fromUser: from, claimedFrom: '', text: body.text, ...send }, this.options.maxTextBytes);
    // Each goes to its conversation's partition owner, in order with the conversation's other writes.
    const replies = await Promise.all(sends.map((send) => this.deps.requests.request({
      userId: from, deviceId: '', trusted: true, body: { case: 'send', value: { ...send, text: body.text } },
    })));
    const out = replies.map((reply) => {
      if (reply.body.case === 'error') throw new LonglinkError(reply.body.value.code, reply.body.value.message);
      if (reply.body.case !== 'sendAck') throw new LonglinkError(ErrorCode.INTERNAL, `unexpected reply ${reply.body.case ?? 'empty'}`);
      const a = reply.body.value;
      return { conversation_id: a.conversationId, seq: Number(a.seq), server_msg_id: a.serverMsgId, sent_at_ms: Number(a.sentAtMs), duplicate: a.duplicate };
    });
    send(res, 200, body.to_users ? { messages: out } : out[0]);
  }

  /** The oldest dead letters (`?limit=N`, at most 1000), and how many there are. */
  private async deadLetters(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const raw = new URL(req.url ?? '/', 'http://x').searchParams.get('limit');
    const limit = raw === null ? 100 : Number(raw);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new HttpError('BAD_REQUEST', 'limit must be an integer from 1 to 1000');
    const [letters, count] = await Promise.all([this.deps.bus.dead.list(limit), this.deps.bus.dead.count()]);
    send(res, 200, {
      count,
      dead_letters: letters.map((d) => ({
        id: d.id, stream: d.stream, entry_id: d.entryId, partition: d.partition, operation: d.operation, user_id: d.userId,
        error: d.error, failed_at_ms: d.failedAtMs, attempts: d.attempts,
      })),
    });
  }

  /** Replay dead letters (`{"ids": [...]}`, or every one when empty), each once, at the end of its original partition. */
  private async replayDeadLetters(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const body = parse(ReplayBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes));
    const replayed = await this.deps.bus.dead.replay(body.ids ?? []);
    send(res, 200, { replayed });
  }

  private shardAdmin(): ShardAdmin {
    if (!this.deps.bus.shards) throw new HttpError('NOT_FOUND', 'the embedded server has no bus shards (a cluster on Redis has)');
    return this.deps.bus.shards;
  }

  /** Every shard of every uplink service and committed-stream group: owner, lag, state; and the count. */
  private async shardStatus(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const admin = this.shardAdmin();
    const topics = await admin.shardStatus();
    const map = admin.shardMap();
    send(res, 200, {
      count: map.count, previous: map.previous, epoch: map.epoch,
      topics: topics.map((t) => ({ topic: t.topic, shards: t.shards.map((x) => ({ shard: x.shard, owner: x.owner ?? null, lag: x.lag, state: x.state })) })),
    });
  }

  /** Grow the shard count (`{"count": 64}`) on the live cluster. */
  private async growShards(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const body = parse(GrowBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes));
    try {
      const map = await this.shardAdmin().growShards(body.count);
      send(res, 200, { count: map.count, previous: map.previous, epoch: map.epoch });
    } catch (err) {
      if (err instanceof HttpError) throw err;
      throw new HttpError('BAD_REQUEST', (err as Error).message);
    }
  }

  private datacenterAdmin(): DatacenterAdmin {
    if (!this.deps.datacenters) throw new HttpError('NOT_FOUND', 'this cluster has one datacenter (no LONGLINK_DC_PEERS)');
    return this.deps.datacenters;
  }

  /** Who serves each datacenter's homes, as this node's datacenter and its reachable peers record it. */
  private async dcStatus(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    send(res, 200, await this.datacenterAdmin().status());
  }

  /** Fail a datacenter's homes over to another (this one by default), or hand them back to it once it is back. */
  private async dcMove(req: IncomingMessage, res: ServerResponse, over: boolean): Promise<void> {
    this.requireAdmin(req);
    const admin = this.datacenterAdmin();
    const body = parse(DcBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes));
    try {
      send(res, 200, over ? await admin.failover(body.dc, body.to) : await admin.failback(body.dc));
    } catch (err) {
      if (err instanceof HttpError) throw err;
      throw new HttpError('UNAVAILABLE', (err as Error).message);
    }
  }

  private riskControl(): RiskControl {
    if (!this.deps.risk) throw new HttpError('NOT_FOUND', 'risk control is not served here');
    return this.deps.risk;
  }

  /** The risk rules in force on this node (every node loads a new version within a second). */
  private async riskRules(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const { version, updatedAtMs, document } = this.riskControl().rules;
    send(res, 200, { version, updated_at_ms: updatedAtMs, rules: document });
  }

  /** Replace the risk rules (the whole document; src/risk/rules.ts). A bad document is refused and the rules in force stay. */
  private async putRiskRules(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const control = this.riskControl();
    const json = await readJson(req, MAX_RULES_BYTES);
    try {
      const { version, document } = await control.put(json);
      send(res, 200, { version, rules: document });
    } catch (err) {
      if (err instanceof RulesError) throw new HttpError('BAD_REQUEST', err.message);
      throw err;
    }
  }

  /** What the risk service did, newest first: `?limit=` (1-1000, default 100), `?before=<id>` to page back, `?user_id=` to filter. */
  private async riskAudit(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const q = new URL(req.url ?? '/', 'http://x').searchParams;
    const limit = q.get('limit') === null ? 100 : Number(q.get('limit'));
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new HttpError('BAD_REQUEST', 'limit must be an integer from 1 to 1000');
    const before = q.get('before') === null ? undefined : Number(q.get('before'));
    if (before !== undefined && (!Number.isSafeInteger(before) || before < 1)) throw new HttpError('BAD_REQUEST', 'before must be an entry id');
    const user = q.get('user_id') ?? undefined;
    if (user !== undefined && !userId.safeParse(user).success) throw new HttpError('BAD_REQUEST', 'user_id is not a valid user id');
    const entries = await this.riskControl().audit({ limit, beforeId: before, userId: user });
    send(res, 200, {
      entries: entries.map((e) => ({
        id: e.id, at_ms: e.atMs, user_id: e.userId, rule: e.rule, action: e.action, detail: JSON.parse(e.detail) as unknown,
      })),
      next_before: entries.length === limit ? entries.at(-1)!.id : null,
    });
  }

  /** The secret webhook requests are signed with (one per cluster, made on first use). */
  private async webhookSecret(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    send(res, 200, { secret: await this.riskControl().webhookSecret() });
  }

  /** A system announcement to every online connection of every gateway; not stored. */
  private async broadcast(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const body = parse(BroadcastBody, await readJson(req, this.options.maxBodyBytes ?? DEFAULTS.maxBodyBytes));
    const id = crypto.randomUUID();
    const sentAtMs = Date.now();
    const frame = encodeFrame(makeFrame(0, {
      case: 'event',
      value: { body: { case: 'broadcast', value: { text: body.text, sentAtMs: BigInt(sentAtMs), id } } },
    }));
    const gateways = await this.deps.registry.live('gateway');
    for (const g of gateways) await this.deps.bus.publishDown(g.id, down({ case: 'announce', value: { frame } }));
    send(res, 200, { id, sent_at_ms: sentAtMs, gateways: gateways.length });
  }

  /** Every live node of the cluster, every role (admin): by role, then id. */
  private async nodes(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const nodes = (await this.deps.registry.all()).sort(byRoleThenId);
    send(res, 200, {
      nodes: nodes.map((n) => ({
        id: n.id,
        role: n.role,
        services: n.services ?? null,
        http_url: n.httpUrl ?? null,
        tcp_url: n.tcpUrl ?? null,
        ws_url: n.wsUrl ?? null,
        load: n.load,
        started_at_ms: n.startedAtMs,
      })),
    });
  }

  /**
   * Discovery: the live gateways of the caller's datacenter (`?dc=` names
   * one, else this node's), least loaded first; when it has none, those of the
   * first other datacenter (by name) that has some. `datacenter` says whose
   * they are; `apis` lists every datacenter's API addresses, so a client whose
   * datacenter is gone asks another one.
   */
  private async gateways(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const own = this.options.dc ?? 'dc1';
    const asked = new URL(req.url ?? '/', 'http://x').searchParams.get('dc') || own;
    const registries = new Map<string, Registry>([[own, this.deps.registry], ...(this.deps.peerRegistries ?? [])]);
    if (!registries.has(asked)) {
      const { status, body } = httpError('NOT_FOUND', `no datacenter ${asked}; known: ${[...registries.keys()].join(', ')}`);
      return send(res, status, body);
    }
    const order = [asked, ...[...registries.keys()].filter((dc) => dc !== asked).sort()];
    // Another datacenter may be gone: its registry is given a second, then counted as empty.
    const live = (dc: string, role: 'gateway' | 'auth' | 'logic'): Promise<NodeInfo[]> => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        registries.get(dc)!.live(role).catch(() => []),
        new Promise<NodeInfo[]>((resolve) => (timer = setTimeout(() => resolve([]), dc === own ? 5000 : 1000))),
      ]).finally(() => clearTimeout(timer));
    };
    let served = asked;
    let nodes = await live(asked, 'gateway');
    for (const dc of order.slice(1)) {
      if (nodes.length > 0) break;
      nodes = await live(dc, 'gateway');
      served = dc;
    }
    const apis = (await Promise.all(order.map(async (dc) => [...await live(dc, 'auth'), ...await live(dc, 'logic')]
      .flatMap((n) => (n.httpUrl ? [{ datacenter: dc, url: n.httpUrl }] : []))))).flat();
    send(res, 200, {
      datacenter: nodes.length > 0 ? served : asked,
      gateways: nodes.map((n) => ({ id: n.id, tcp_url: n.tcpUrl ?? null, ws_url: n.wsUrl ?? null, load: n.load })),
      apis,
    });
  }
}

/** A JSON answer. */
export function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const json = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json), 'cache-control': 'no-store' });
  res.end(json);
}

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    throw new HttpError('BAD_REQUEST', `${where}${issue?.message ?? 'invalid body'}`);
  }
  return result.data;
}

async function readJson(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new HttpError('BODY_TOO_LARGE', `body is over ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new HttpError('BAD_JSON', 'body is empty; send a JSON object');
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError('BAD_JSON', 'body is not valid JSON');
  }
}

// The HTTP API served by logic: tokens, business push, gateway discovery,
// health. JSON in and out; every error is {"error": {"code", "message"}}
// with a stable code name.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { timingSafeEqual, createHash } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode, ID_PATTERN, LonglinkError, SYSTEM_USER, errorName } from '../protocol/index.js';
import type { TokenService } from '../auth/tokens.js';
import type { Registry } from '../engines/registry.js';
import type { Pipeline } from './pipeline.js';

export interface HttpApiOptions {
  nodeId: string;
  adminKey: string;
  tokenTtlSeconds: number;
  /** Largest request body, bytes. @default 65536 */
  maxBodyBytes?: number;
}

export interface HttpApiDeps {
  tokens: TokenService;
  registry: Registry;
  pipeline: Pipeline;
}

const userId = z.string().regex(ID_PATTERN, 'must be 1-64 characters of A-Z a-z 0-9 _ . @ -');

const TokenBody = z.object({
  user_id: userId.refine((u) => u !== SYSTEM_USER, 'is reserved'),
  device_id: userId.optional(),
  platform: z.string().min(1).max(32).optional(),
  ttl_seconds: z.number().int().min(10).max(90 * 86400).optional(),
}).strict();

const MessageBody = z.object({
  from: userId.optional(),
  to: userId,
  text: z.string().min(1),
  client_msg_id: z.string().min(1).max(128).optional(),
}).strict();

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

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
        const status = err.code === ErrorCode.FORBIDDEN ? 403 : err.code === ErrorCode.UNAVAILABLE ? 503 : 400;
        return send(res, status, { error: { code: errorName(err.code), message: err.message } });
      }
      console.error('[http] request failed', err);
      send(res, 500, { error: { code: 'INTERNAL', message: 'internal error' } });
    });
  };

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    if (path === '/healthz' && method === 'GET') return send(res, 200, { status: 'ok', node: this.options.nodeId });
    if (path === '/api/v1/gateways' && method === 'GET') return this.gateways(res);
    if (path === '/api/v1/tokens' && method === 'POST') return this.issueToken(req, res);
    if (path === '/api/v1/messages' && method === 'POST') return this.postMessage(req, res);
    if (path === '/healthz' || path.startsWith('/api/')) {
      const known = ['/healthz', '/api/v1/gateways', '/api/v1/tokens', '/api/v1/messages'].includes(path);
      if (known) throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
    }
    throw new HttpError(404, 'NOT_FOUND', `no route for ${method} ${path}`);
  }

  private requireAdmin(req: IncomingMessage): void {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer (.+)$/.exec(header);
    if (!match) throw new HttpError(401, 'UNAUTHORIZED', 'missing Authorization: Bearer <admin key>');
    if (!timingSafeEqual(digest(match[1]!), this.adminDigest)) throw new HttpError(401, 'UNAUTHORIZED', 'wrong admin key');
  }

  private async issueToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const body = parse(TokenBody, await readJson(req, this.options.maxBodyBytes ?? 65536));
    const deviceId = body.device_id ?? 'default';
    const platform = body.platform ?? 'other';
    const { token, expiresAtMs } = await this.deps.tokens.issue(body.user_id, deviceId, platform, body.ttl_seconds ?? this.options.tokenTtlSeconds);
    send(res, 200, { token, user_id: body.user_id, device_id: deviceId, platform, expires_at_ms: expiresAtMs });
  }

  private async postMessage(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requireAdmin(req);
    const body = parse(MessageBody, await readJson(req, this.options.maxBodyBytes ?? 65536));
    const from = body.from ?? SYSTEM_USER;
    const draft = this.deps.pipeline.draft({
      fromUser: from, fromDevice: 'api', claimedFrom: '', toUser: body.to, conversationId: '',
      clientMsgId: body.client_msg_id ?? `api-${crypto.randomUUID()}`, text: body.text,
    }, Date.now());
    const [result] = await this.deps.pipeline.commit([draft]);
    const m = result!.message;
    send(res, 200, {
      conversation_id: m.conversationId, seq: m.seq, server_msg_id: m.serverMsgId,
      sent_at_ms: m.sentAtMs, duplicate: result!.duplicate,
    });
  }

  private async gateways(res: ServerResponse): Promise<void> {
    const nodes = await this.deps.registry.live('gateway');
    send(res, 200, {
      gateways: nodes.map((n) => ({ id: n.id, tcp_url: n.tcpUrl ?? null, ws_url: n.wsUrl ?? null, load: n.load })),
    });
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
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
    throw new HttpError(400, 'BAD_REQUEST', `${where}${issue?.message ?? 'invalid body'}`);
  }
  return result.data;
}

async function readJson(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new HttpError(413, 'BODY_TOO_LARGE', `body is over ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new HttpError(400, 'BAD_JSON', 'body is empty; send a JSON object');
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'BAD_JSON', 'body is not valid JSON');
  }
}

// Local stand-ins for APNs and FCM, since the real services are out of reach
// here. Each checks what the real one checks before it takes a notification
// (APNs: an ES256 provider token of the team and key, the topic, the push
// type, a UUID apns-id; FCM: an RS256 service-account assertion exchanged for
// an access token, then that bearer token on every send) and records what it
// took. A test scripts the answers per device token (a dead token, a 503, an
// expired provider token) and reads what each device was sent.
import http2 from 'node:http2';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { jwtVerify } from 'jose';

export interface Answer {
  status: number;
  /** APNs: the reason; FCM: the error status and errorCode (`NOT_FOUND/UNREGISTERED`). */
  reason?: string;
  retryAfter?: string;
}

export interface ApnsRequest {
  token: string;
  headers: http2.IncomingHttpHeaders;
  payload: { aps: { alert: { title: string; body: string }; badge: number; 'thread-id': string }; conversation_id: string; seq: number; notification_id: string };
  /** What the fake answered. */
  status: number;
}

function keys(type: 'ec' | 'rsa'): { privateKeyPem: string; publicKey: KeyObject } {
  const pair = type === 'ec'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKeyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKey: pair.publicKey };
}

async function readBody(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** APNs' HTTP/2 API (cleartext): POST /3/device/{token}. */
export class FakeApns {
  readonly teamId = 'TEAM123456';
  readonly keyId = 'KEY7654321';
  readonly topic = 'com.example.chat';
  readonly privateKeyPem: string;
  private readonly publicKey: KeyObject;
  /** Every request whose provider token was good, in order, with the answer it got. */
  readonly requests: ApnsRequest[] = [];
  /** Requests refused for their provider token (bad signature, team, key, or told expired). */
  authRefused = 0;
  /** Answers per device token, taken in order; then 200. */
  readonly script = new Map<string, Answer[]>();
  /** The next this-many requests are told their provider token expired. */
  expireProviderTokens = 0;
  url = '';
  private server: http2.Http2Server | undefined;
  private readonly sessions = new Set<http2.ServerHttp2Session>();

  constructor() {
    ({ privateKeyPem: this.privateKeyPem, publicKey: this.publicKey } = keys('ec'));
  }

  async start(): Promise<void> {
    const server = http2.createServer();
    server.on('session', (session) => {
      this.sessions.add(session);
      session.on('close', () => this.sessions.delete(session));
    });
    server.on('stream', (stream, headers) => {
      void this.answer(stream, headers).catch(() => stream.close());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  /** What each device token was sent (the requests answered 200). */
  delivered(token: string): ApnsRequest[] {
    return this.requests.filter((r) => r.token === token && r.status === 200);
  }

  private async answer(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): Promise<void> {
    const body = await readBody(stream);
    const reply = (status: number, reason?: string, extra: Record<string, string> = {}): void => {
      stream.respond({ ':status': status, 'apns-id': String(headers['apns-id'] ?? randomUUID()), ...extra });
      stream.end(reason ? JSON.stringify({ reason }) : undefined);
    };
    const path = String(headers[':path']);
    if (headers[':method'] !== 'POST' || !path.startsWith('/3/device/')) return reply(405, 'MethodNotAllowed');
    const auth = String(headers.authorization ?? '');
    try {
      const { protectedHeader, payload } = await jwtVerify(auth.replace(/^bearer /, ''), this.publicKey, { issuer: this.teamId, algorithms: ['ES256'] });
      if (protectedHeader.kid !== this.keyId || typeof payload.iat !== 'number' || Math.abs(payload.iat * 1000 - Date.now()) > 3_600_000) throw new Error('bad token');
    } catch {
      this.authRefused++;
      return reply(403, 'InvalidProviderToken');
    }
    if (this.expireProviderTokens > 0) {
      this.expireProviderTokens--;
      this.authRefused++;
      return reply(403, 'ExpiredProviderToken');
    }
    if (headers['apns-topic'] !== this.topic) return reply(400, 'TopicDisallowed');
    if (headers['apns-push-type'] !== 'alert') return reply(400, 'InvalidPushType');
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(String(headers['apns-id']))) return reply(400, 'BadMessageId');
    if (Buffer.byteLength(String(headers['apns-collapse-id'] ?? '')) > 64) return reply(400, 'BadCollapseId');
    const token = decodeURIComponent(path.slice('/3/device/'.length));
    const next = this.script.get(token)?.shift() ?? { status: 200 };
    this.requests.push({ token, headers, payload: JSON.parse(body) as ApnsRequest['payload'], status: next.status });
    reply(next.status, next.reason, next.retryAfter ? { 'retry-after': next.retryAfter } : {});
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    for (const session of this.sessions) session.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

export interface FcmRequest {
  token: string;
  message: {
    token: string;
    notification: { title: string; body: string };
    android: { collapse_key: string; notification: { tag: string; notification_count: number } };
    apns: { payload: { aps: { badge: number } } };
    data: Record<string, string>;
  };
  status: number;
}

/** FCM's HTTP v1 API and the OAuth token endpoint its service account uses. */
export class FakeFcm {
  readonly projectId = 'longlink-test';
  readonly clientEmail = 'push@longlink-test.iam.gserviceaccount.com';
  readonly privateKeyPem: string;
  private readonly publicKey: KeyObject;
  /** Access tokens handed out and still good. */
  private readonly live = new Set<string>();
  /** Token exchanges that were granted. */
  tokensIssued = 0;
  readonly requests: FcmRequest[] = [];
  authRefused = 0;
  readonly script = new Map<string, Answer[]>();
  url = '';
  private server: Server | undefined;

  constructor() {
    ({ privateKeyPem: this.privateKeyPem, publicKey: this.publicKey } = keys('rsa'));
  }

  /** The service account key file Firebase hands out, pointed at this fake. */
  serviceAccount(): { type: string; project_id: string; client_email: string; private_key: string; token_uri: string } {
    return { type: 'service_account', project_id: this.projectId, client_email: this.clientEmail, private_key: this.privateKeyPem, token_uri: `${this.url}/token` };
  }

  /** Every access token handed out stops working (FCM then answers 401). */
  revokeAccessTokens(): void {
    this.live.clear();
  }

  delivered(token: string): FcmRequest[] {
    return this.requests.filter((r) => r.token === token && r.status === 200);
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      void this.answer(req).then(({ status, body, headers }) => res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body)))
        .catch(() => res.writeHead(500).end());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  private async answer(req: IncomingMessage): Promise<{ status: number; body: unknown; headers?: Record<string, string> }> {
    const raw = await readBody(req);
    if (req.method === 'POST' && req.url === '/token') {
      const form = new URLSearchParams(raw);
      try {
        if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') throw new Error('grant type');
        const { payload } = await jwtVerify(form.get('assertion') ?? '', this.publicKey, { issuer: this.clientEmail, audience: `${this.url}/token`, algorithms: ['RS256'] });
        if (payload.scope !== 'https://www.googleapis.com/auth/firebase.messaging') throw new Error('scope');
      } catch {
        return { status: 400, body: { error: 'invalid_grant' } };
      }
      const token = `ya29.${randomUUID()}`;
      this.live.add(token);
      this.tokensIssued++;
      return { status: 200, body: { access_token: token, expires_in: 3599, token_type: 'Bearer' } };
    }
    if (req.method !== 'POST' || req.url !== `/v1/projects/${this.projectId}/messages:send`) return { status: 404, body: { error: { status: 'NOT_FOUND' } } };
    if (!this.live.has(String(req.headers.authorization ?? '').replace(/^Bearer /, ''))) {
      this.authRefused++;
      return { status: 401, body: { error: { code: 401, status: 'UNAUTHENTICATED' } } };
    }
    const { message } = JSON.parse(raw) as { message: FcmRequest['message'] };
    const next = this.script.get(message.token)?.shift() ?? { status: 200 };
    this.requests.push({ token: message.token, message, status: next.status });
    if (next.status === 200) return { status: 200, body: { name: `projects/${this.projectId}/messages/${randomUUID()}` } };
    const [status, errorCode] = (next.reason ?? 'INTERNAL/').split('/');
    return {
      status: next.status,
      body: { error: { code: next.status, status, message: 'scripted', details: errorCode ? [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }] : [] } },
      ...(next.retryAfter ? { headers: { 'retry-after': next.retryAfter } } : {}),
    };
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

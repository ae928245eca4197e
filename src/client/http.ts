// The HTTP side of the client: tokens (with the admin key, for tools and
// trusted backends) and gateway discovery. Uses fetch, so Node and browsers alike.
import { LonglinkError, ErrorCode } from '../protocol/index.js';
import { failureText } from './net-errors.js';

/** The part of `fetch` these calls use. */
export type HttpFetch = (url: string, init?: RequestInit) => Promise<Response>;

export interface HttpOptions {
  /**
   * The fetch to call the API with: in Node, `nodeFetch({ ca })` trusts a
   * private CA for an https:// server. @default globalThis.fetch
   */
  fetch?: HttpFetch;
  /** A call with no answer within this is given up (UNAVAILABLE). @default 10000 */
  timeoutMs?: number;
}

export interface TokenResponse {
  token: string;
  user_id: string;
  device_id: string;
  platform: string;
  expires_at_ms: number;
}

export interface GatewayInfo {
  id: string;
  tcp_url: string | null;
  ws_url: string | null;
  load: number;
}

/**
 * The HTTP API refused a request: `code` is the nearest wire code (FORBIDDEN
 * for 401 and 403), and `codeName` the API's own (e.g. UNAUTHORIZED), so a
 * tool shows the same name as the HTTP answer.
 */
export class HttpApiError extends LonglinkError {
  constructor(code: ErrorCode, readonly status: number, readonly apiCode: string, message: string) {
    super(code, message);
    this.name = 'HttpApiError';
  }

  override get codeName(): string {
    return this.apiCode || super.codeName;
  }
}

async function call<T>(url: string, init: RequestInit, options: HttpOptions): Promise<T> {
  let res: Response;
  try {
    res = await (options.fetch ?? fetch)(url, { signal: AbortSignal.timeout(options.timeoutMs ?? 10_000), ...init });
  } catch (err) {
    throw new LonglinkError(ErrorCode.UNAVAILABLE, `cannot reach ${url}: ${failureText(err)}`);
  }
  const body = (await res.json().catch(() => ({}))) as { error?: { code: string; message: string } };
  if (!res.ok) throw apiError(res.status, body, res.statusText);
  return body as T;
}

/** The error of an API answer that is not 2xx (its body: {"error": {"code", "message"}}). */
export function apiError(status: number, body: unknown, statusText = ''): HttpApiError {
  const e = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
  const code = status === 401 || status === 403 ? ErrorCode.FORBIDDEN : status === 404 ? ErrorCode.NOT_FOUND : status >= 500 ? ErrorCode.UNAVAILABLE : ErrorCode.BAD_REQUEST;
  return new HttpApiError(code, status, e?.code ?? '', `${status} ${e?.code ?? ''}: ${e?.message ?? statusText}`);
}

export function requestToken(
  server: string,
  adminKey: string,
  body: { user_id: string; device_id?: string; platform?: string; ttl_seconds?: number },
  options: HttpOptions = {},
): Promise<TokenResponse> {
  return call(`${server.replace(/\/$/, '')}/api/v1/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${adminKey}` },
    body: JSON.stringify(body),
  }, options);
}

/** Live gateways; with TLS on, their URLs are tls:// and wss://. */
export async function listGateways(server: string, options: HttpOptions = {}): Promise<GatewayInfo[]> {
  return (await discover(server, options)).gateways;
}

/** What discovery answers: the gateways of one datacenter, and every datacenter's API addresses. */
export interface Discovery {
  /** Whose gateways these are (the asked datacenter's, or another's when it has none live). */
  datacenter?: string;
  gateways: GatewayInfo[];
  /** The APIs of every datacenter, the answering one's first. */
  apis?: { datacenter: string; url: string }[];
}

export async function discover(server: string, options: HttpOptions = {}): Promise<Discovery> {
  return call<Discovery>(`${server.replace(/\/$/, '')}/api/v1/gateways`, { method: 'GET' }, options);
}

/**
 * A `url` option for the client that asks the API for live gateways on every
 * (re)connect and picks one: of two random gateways the less loaded ("power
 * of two choices", so a crowd reconnecting at once spreads instead of piling
 * onto the one that was least loaded a moment ago), never the one that just
 * failed unless it is the only one. `tcp` picks the gateways' tcp:// (or
 * tls://) URLs, `ws` their ws:// (or wss://) ones.
 */
export function gatewayPicker(server: string | readonly string[], transport: 'tcp' | 'ws', options: HttpOptions = {}): (avoid: string | undefined) => Promise<string> {
  // Several datacenters: the APIs given first, in order, then those discovery named (another
  // datacenter's), so a client whose datacenter is gone asks the next one by itself.
  const apis = [...(typeof server === 'string' ? [server] : server)].map((u) => u.replace(/\/$/, ''));
  if (apis.length === 0) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'gatewayPicker needs at least one API address');
  const ask = async (): Promise<GatewayInfo[]> => {
    let failure: unknown;
    for (const api of [...apis]) {
      try {
        const answer = await discover(api, options);
        for (const { url } of answer.apis ?? []) {
          const u = url.replace(/\/$/, '');
          if (!apis.includes(u) && apis.length < 64) apis.push(u);
        }
        if (answer.gateways.length > 0) return answer.gateways;
      } catch (err) {
        failure = err;
      }
    }
    if (failure !== undefined) throw failure;
    return [];
  };
  return async (avoid) => {
    const urls = (await ask())
      .map((g) => ({ url: transport === 'tcp' ? g.tcp_url : g.ws_url, load: g.load }))
      .filter((g): g is { url: string; load: number } => typeof g.url === 'string' && g.url !== '');
    if (urls.length === 0) throw new LonglinkError(ErrorCode.UNAVAILABLE, `no live gateway with ${transport} at ${apis.join(', ')}`);
    const candidates = urls.length > 1 ? urls.filter((g) => g.url !== avoid) : urls;
    const a = candidates[Math.floor(Math.random() * candidates.length)]!;
    const b = candidates[Math.floor(Math.random() * candidates.length)]!;
    return (a.load <= b.load ? a : b).url;
  };
}

// GET /metrics, /healthz and /readyz, answered the same way by every role
// before its own routes (the API, the web page, /ws).
//
// - /healthz: 200 while the process serves requests (liveness: restart it if not).
// - /readyz: 200 when every readiness check passes, else 503 with
//   {"error": {"code": "UNAVAILABLE", "message"}, "checks": {name: "ok" | why}}.
// - /metrics: the Prometheus text format. Open, like the probes: serve these
//   ports on an internal network or loopback. With a metrics key configured,
//   /metrics wants `Authorization: Bearer <key>` (401 UNAUTHORIZED otherwise).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Metrics } from './metrics.js';
import { httpError } from '../protocol/http-errors.js';
import type { Readiness } from './ready.js';
import { log } from './log.js';

export const OBSERVABILITY_PATHS: ReadonlySet<string> = new Set(['/metrics', '/healthz', '/readyz']);

export interface ObservabilityRoutesOptions {
  nodeId: string;
  role: string;
  metrics: Metrics;
  readiness: Readiness;
  /** When set, /metrics needs `Authorization: Bearer <metricsKey>`. */
  metricsKey?: string;
  /**
   * Answer /healthz here; false leaves it to the role's own routes (the logic
   * HTTP API answers it on logic nodes and the embedded server). @default true
   */
  healthz?: boolean;
  /** More fields for the /healthz body (e.g. a gateway's connection count). */
  health?: () => Record<string, unknown>;
}

/** A handler that answers the observability paths and returns true, or returns false for any other request. */
export type ObservabilityRoutes = (req: IncomingMessage, res: ServerResponse) => boolean;

const logger = log.child({ component: 'http' });

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export function observabilityRoutes(o: ObservabilityRoutesOptions): ObservabilityRoutes {
  const keyDigest = o.metricsKey ? digest(o.metricsKey) : undefined;
  const paths = new Set(OBSERVABILITY_PATHS);
  if (o.healthz === false) paths.delete('/healthz');
  const startedAt = Date.now();

  const authorized = (req: IncomingMessage): boolean => {
    if (!keyDigest) return true;
    const match = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    return match !== null && timingSafeEqual(digest(match[1]!), keyDigest);
  };

  const serve = async (path: string, req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (path === '/healthz') {
      return send(res, 200, { status: 'ok', node: o.nodeId, role: o.role, uptime_s: Math.round((Date.now() - startedAt) / 1000), ...o.health?.() });
    }
    if (path === '/readyz') {
      const { ready, checks } = await o.readiness.report();
      if (ready) return send(res, 200, { status: 'ready', node: o.nodeId, role: o.role, checks });
      const failing = Object.entries(checks).filter(([, v]) => v !== 'ok').map(([k, v]) => `${k}: ${v}`);
      const { status, body } = httpError('UNAVAILABLE', `not ready (${failing.join('; ')})`);
      return send(res, status, { ...body, status: 'not ready', node: o.nodeId, role: o.role, checks });
    }
    if (!authorized(req)) {
      const { status, body } = httpError('UNAUTHORIZED', 'missing or wrong Authorization: Bearer <metrics key>');
      return send(res, status, body);
    }
    const body = await o.metrics.scrape();
    res.writeHead(200, { 'content-type': o.metrics.contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    res.end(body);
  };

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (!paths.has(path)) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const { status, body } = httpError('METHOD_NOT_ALLOWED', `${req.method ?? ''} is not allowed on ${path}`);
      send(res, status, body);
      return true;
    }
    serve(path, req, res).catch((err: unknown) => {
      logger.error({ err, path }, 'observability request failed');
      if (res.headersSent) res.destroy();
      else {
        const { status, body } = httpError('INTERNAL', 'internal error');
        send(res, status, body);
      }
    });
    return true;
  };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), 'cache-control': 'no-store' });
  res.end(data);
}

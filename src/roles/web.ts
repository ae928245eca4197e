// The web chat page on the embedded server: the files `npm run build` puts in
// dist/web, served at `/` and `/assets/...`, and whether the page's dev login
// (POST /api/v1/dev/token) is on.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFile, realpath, stat } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerConfig } from '../config.js';
import { log } from '../observability/log.js';
import { OBSERVABILITY_PATHS } from '../observability/http.js';

const logger = log.child({ component: 'web' });

/** dist/web of this package, from dist/roles/ (built) and src/roles/ (tsx) alike. */
export function defaultWebRoot(): string {
  return fileURLToPath(new URL('../../dist/web/', import.meta.url));
}

/**
 * The dev login is on only when asked for (LONGLINK_DEV_LOGIN=1, --dev-login 1):
 * it hands out tokens to anyone who asks, so nothing turns it on implicitly.
 * `longlink start` asks for it for a newcomer's quick start (src/cli/start.ts:
 * quickStartDevLogin) and says so.
 */
export function devLoginEnabled(config: ServerConfig): boolean {
  return config.devLogin === true;
}

/** A host name or address that is this machine only. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

const PAGE_HEADERS = {
  'content-security-policy': "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

export interface StaticFiles {
  /** Whether this request is for the page (GET or HEAD, outside /api/, /healthz, /readyz and /metrics). */
  handles(req: IncomingMessage): boolean;
  serve(req: IncomingMessage, res: ServerResponse): void;
}

/**
 * Files under `root`: `/` is index.html; only regular files with a known
 * type; no dot-files, no `..`, nothing outside root (symlinks included); 404
 * otherwise. index.html is revalidated on every load, `/assets/` (names
 * carry a content hash) are cached for a year.
 */
export function staticFiles(root: string): StaticFiles {
  const rootDir = root.endsWith(sep) ? root.slice(0, -1) : root;
  let realRoot: Promise<string | undefined> | undefined;

  async function resolveFile(urlPath: string): Promise<string | undefined> {
    let path: string;
    try {
      path = decodeURIComponent(urlPath);
    } catch {
      return undefined;
    }
    if (path === '/') path = '/index.html';
    if (path.includes('\0') || path.includes('\\')) return undefined;
    const segments = path.split('/').slice(1);
    if (segments.some((s) => s === '' || s.startsWith('.'))) return undefined;
    if (!(extname(path) in TYPES)) return undefined;
    const file = join(rootDir, ...segments);
    if (!file.startsWith(rootDir + sep)) return undefined;
    realRoot ??= realpath(rootDir).catch(() => undefined);
    const base = await realRoot;
    if (base === undefined) {
      realRoot = undefined; // not built yet: look again next time
      return undefined;
    }
    try {
      const real = await realpath(file);
      return real.startsWith(base + sep) ? real : undefined;
    } catch {
      return undefined;
    }
  }

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const urlPath = (req.url ?? '/').split('?')[0] ?? '/';
    const file = await resolveFile(urlPath);
    const info = file === undefined ? undefined : await stat(file).catch(() => undefined);
    if (file === undefined || !info?.isFile()) {
      const hint = urlPath === '/' || urlPath === '/index.html' ? ' (the web page is not built: run npm run build)' : '';
      return notFound(res, `no file at ${urlPath}${hint}`);
    }
    const type = TYPES[extname(file)]!;
    const etag = `W/"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
    const headers: Record<string, string | number> = {
      'content-type': type,
      etag,
      'last-modified': info.mtime.toUTCString(),
      'x-content-type-options': 'nosniff',
      'cache-control': urlPath.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
      ...(type.startsWith('text/html') ? PAGE_HEADERS : {}),
    };
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const body = await readFile(file);
    headers['content-length'] = body.length;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  return {
    handles(req) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return false;
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      return !path.startsWith('/api/') && !OBSERVABILITY_PATHS.has(path) && !path.startsWith('/healthz/');
    },
    serve(req, res) {
      serve(req, res).catch((err: unknown) => {
        logger.error({ err }, 'request failed');
        if (res.headersSent) res.destroy();
        else sendError(res, 500, 'INTERNAL', 'internal error');
      });
    },
  };
}

function notFound(res: ServerResponse, message: string): void {
  sendError(res, 404, 'NOT_FOUND', message);
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  const json = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json), 'cache-control': 'no-store' });
  res.end(json);
}

// Test harness: a real embedded server on free ports in a temp data dir,
// and raw protocol clients over real sockets.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadServerConfig, type ServerConfig } from '../../src/config.js';
import { startEmbedded, type EmbeddedOptions, type RunningServer } from '../../src/roles/embedded.js';
import { TokenService } from '../../src/auth/tokens.js';

export const ADMIN_KEY = 'test-admin-key-0123456789';
export const TOKEN_SECRET = 'test-token-secret-0123456789abcdef';

export interface TestServer extends RunningServer {
  config: ServerConfig;
  dataDir: string;
  /** A login token signed with the server's secret. */
  token(userId: string, deviceId?: string, ttlSeconds?: number, platform?: string): Promise<string>;
  /** Stop and delete the data dir. */
  close(): Promise<void>;
}

/**
 * `overrides` are config flags (e.g. `{ 'dev-login': '1' }` turns the web
 * page's dev login on; it is off here by default, as the admin key is set).
 */
export async function startTestServer(overrides: Record<string, string> = {}, dataDir?: string, options: EmbeddedOptions = {}): Promise<TestServer> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'longlink-test-'));
  const config = loadServerConfig({
    'http-port': '0',
    'tcp-port': '0',
    'data-dir': dir,
    'admin-key': ADMIN_KEY,
    'token-secret': TOKEN_SECRET,
    'sqlite-synchronous': 'normal',
    'node-id': 'test-node',
    // Warnings and errors only: a test that wants the info lines sets it.
    'log-level': 'warn',
    // Tests make groups of users who never wrote to each other (policy tests set 'contacts').
    'group-add-policy': 'anyone',
    ...overrides,
  }, {});
  const server = await startEmbedded(config, options);
  const tokens = new TokenService(config.tokenSecret, config.previousTokenSecrets);
  return {
    ...server,
    config,
    dataDir: dir,
    token: async (userId, deviceId = 'd1', ttlSeconds = 3600, platform = 'other') =>
      (await tokens.issue(userId, deviceId, platform, ttlSeconds)).token,
    close: async () => {
      await server.stop();
      if (!dataDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function gatewayUrl(server: RunningServer, transport: 'tcp' | 'ws'): string {
  return transport === 'tcp' ? server.tcpUrl : server.wsUrl;
}

/** Resolves when `check` returns true, polling; rejects after timeoutMs. */
export async function waitFor(check: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// `longlink start`: the embedded server.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadServerConfig, type ServerConfig } from '../config.js';
import { startEmbedded } from '../roles/embedded.js';

/**
 * The quick start needs no secrets set: it makes a dev admin key and token
 * secret once and keeps them in the data directory (mode 0600), so a restart
 * keeps tokens valid. Configured values always win.
 */
function devSecrets(config: ServerConfig, env: NodeJS.ProcessEnv): { adminKey?: string; tokenSecret?: string } {
  if (env.LONGLINK_ADMIN_KEY && env.LONGLINK_TOKEN_SECRET) return {};
  const file = join(config.dataDir, 'dev-secrets.json');
  let saved: { adminKey: string; tokenSecret: string };
  if (existsSync(file)) saved = JSON.parse(readFileSync(file, 'utf8')) as typeof saved;
  else {
    saved = { adminKey: randomBytes(24).toString('base64url'), tokenSecret: randomBytes(32).toString('base64url') };
    mkdirSync(config.dataDir, { recursive: true });
    writeFileSync(file, JSON.stringify(saved), { mode: 0o600 });
  }
  return { adminKey: saved.adminKey, tokenSecret: saved.tokenSecret };
}

export async function runStart(flags: Record<string, string | undefined>): Promise<void> {
  let config = loadServerConfig(flags);
  const dev = devSecrets(config, process.env);
  const adminFromEnv = flags['admin-key'] ?? process.env.LONGLINK_ADMIN_KEY;
  const secretFromEnv = flags['token-secret'] ?? process.env.LONGLINK_TOKEN_SECRET;
  config = {
    ...config,
    adminKey: adminFromEnv ?? dev.adminKey ?? config.adminKey,
    tokenSecret: secretFromEnv ?? dev.tokenSecret ?? config.tokenSecret,
    generatedAdminKey: adminFromEnv === undefined,
  };
  const server = await startEmbedded(config);
  console.log(`longlink ${config.nodeId} listening http=${server.httpUrl} tcp=${server.tcpUrl} ws=${server.wsUrl}`);
  console.log(`data directory: ${config.dataDir}`);
  if (config.generatedAdminKey) {
    console.log(`dev admin key (kept in ${join(config.dataDir, 'dev-secrets.json')}; set LONGLINK_ADMIN_KEY in production):`);
    console.log(`  export LONGLINK_ADMIN_KEY=${config.adminKey}`);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping`);
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    server.stop().then(() => process.exit(0), (err: unknown) => {
      console.error('stop failed', err);
      process.exit(1);
    });
  };
  // A stray rejection must not take every connection down with it; log it and keep serving.
  process.on('unhandledRejection', (err) => console.error('[longlink] unhandled rejection', err));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

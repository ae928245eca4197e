// `longlink start` (the embedded server) and the cluster roles `longlink gateway` / `longlink logic`.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ConfigError, loadServerConfig, type ServerConfig } from '../config.js';
import type { ServiceRole } from '../roles/logic.js';
import { isLoopback } from '../roles/web.js';
import { log } from '../observability/log.js';
import type { FlagSpec } from './args.js';

/**
 * The flags of `start`, `gateway` and `logic`: every setting the configuration
 * reads (--http-port for LONGLINK_HTTP_PORT), found by loading a configuration
 * with nothing set and noting what it asks for, so a setting added there is a
 * flag here with no list to keep in step. The configuration checks the values.
 */
export const SERVER_FLAGS: FlagSpec = (() => {
  const names = new Set<string>();
  const recorder = new Proxy({}, {
    get: (_target, name) => {
      if (typeof name === 'string') names.add(name);
      return undefined;
    },
  });
  loadServerConfig(recorder, {});
  return Object.fromEntries([...names].map((name) => [name, 'text' as const]));
})();

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

/**
 * Whether `longlink start` runs with the web page's dev login (tokens for any
 * user, no admin key). As configured when it is (LONGLINK_DEV_LOGIN=1|0);
 * else on for a newcomer's quick start only: nobody configured an admin key
 * or a token secret (so the dev secrets are in use), and the server listens
 * on a loopback address. It is then passed on explicitly and printed: the
 * server itself never turns it on by implication.
 */
export function quickStartDevLogin(
  config: ServerConfig, flags: Record<string, string | undefined>, env: Record<string, string | undefined>,
): boolean {
  if (config.devLogin !== undefined) return config.devLogin;
  const configured = (flag: string, name: string) => Boolean(flags[flag] ?? env[name]);
  if (configured('admin-key', 'LONGLINK_ADMIN_KEY') || configured('token-secret', 'LONGLINK_TOKEN_SECRET') || config.tokenSecretsFile) return false;
  return isLoopback(config.host);
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
    devLogin: quickStartDevLogin(config, flags, process.env),
  };
  // Each role loads its own code only: a gateway starts without the logic tier's (a restarted gateway is back sooner).
  const { startEmbedded } = await import('../roles/embedded.js');
  const server = await startEmbedded(config);
  console.log(`longlink ${config.nodeId} listening http=${server.httpUrl} tcp=${server.tcpUrl} ws=${server.wsUrl}`);
  console.log(`data directory: ${config.dataDir}`);
  console.log(`web chat: ${server.httpUrl}/`);
  if (config.devLogin) {
    console.log('dev login on: the web page (POST /api/v1/dev/token) gets a token for any user without the admin key; '
      + 'LONGLINK_DEV_LOGIN=0 turns it off (it is off by default once LONGLINK_ADMIN_KEY or LONGLINK_TOKEN_SECRET is set)');
  }
  if (config.generatedAdminKey) {
    console.log(`dev admin key (kept in ${join(config.dataDir, 'dev-secrets.json')}; set LONGLINK_ADMIN_KEY in production):`);
    console.log(`  export LONGLINK_ADMIN_KEY=${config.adminKey}`);
  }
  stopOnSignals(server);
}

/** A role process: `longlink gateway` or `longlink logic`, configured for a cluster. */
export async function runRole(role: 'gateway' | ServiceRole, flags: Record<string, string | undefined>): Promise<void> {
  const config = loadServerConfig(flags);
  if (!(flags['token-secret'] ?? process.env.LONGLINK_TOKEN_SECRET)) {
    throw new ConfigError(`longlink ${role} needs the cluster's token secret: LONGLINK_TOKEN_SECRET (or --token-secret)`);
  }
  if ((role === 'logic' || role === 'auth') && config.generatedAdminKey) {
    throw new ConfigError(`longlink ${role} needs the cluster's admin key: LONGLINK_ADMIN_KEY (or --admin-key)`);
  }
  if (role === 'gateway') {
    const { startGateway } = await import('../roles/gateway.js');
    const gw = await startGateway(config);
    console.log(`longlink gateway ${config.nodeId} listening tcp=${gw.tcpUrl} ws=${gw.wsUrl} routing=${config.routing}`);
    stopOnSignals(gw);
  } else {
    const { startService } = await import('../roles/logic.js');
    const lg = await startService(config, role);
    console.log(`longlink ${role} ${config.nodeId} listening http=${lg.httpUrl} routing=${config.routing} shards=${config.busShards}`);
    stopOnSignals(lg);
  }
}

function stopOnSignals(server: { stop(): Promise<void> }): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    server.stop().then(() => process.exit(0), (err: unknown) => {
      log.error({ err }, 'stop failed');
      process.exit(1);
    });
  };
  // A stray rejection must not take every connection down with it; log it and keep serving.
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

// Configuration: read and validated once at start, then passed down.
// Every option can come from a flag (--http-port) or the environment
// (LONGLINK_HTTP_PORT); flags win.
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { DEFAULT_MAX_FRAME_BYTES } from './protocol/index.js';

export interface Limits {
  /** Largest frame, bytes. @default 65536 */
  maxFrameBytes: number;
  /** Largest message text, UTF-8 bytes. @default 16384 */
  maxTextBytes: number;
  /** Frames per second per connection, sustained. @default 200 */
  ratePerSecond: number;
  /** Frames a connection may send at once above the rate. @default 400 */
  rateBurst: number;
  /** Bytes waiting to be written to a connection before it is dropped as a slow consumer. @default 4 MiB */
  maxOutboundBytes: number;
  /** Largest group, owner included. @default 20000 */
  maxGroupMembers: number;
  /** Messages (sends) per second per user, all its connections on one gateway together. @default 200 */
  userMessagesPerSecond: number;
  /** Connections one user may hold at once, cluster-wide. @default 20 */
  maxConnectionsPerUser: number;
  /** Failed logins per client address per minute, per gateway; past it, that address's logins are refused for the rest of the minute. @default 60 */
  loginAttemptsPerMinute: number;
}

/** Who may see a user's presence: anyone logged in, or only users sharing a conversation (1:1 or group) with them. */
export type PresenceVisibility = 'all' | 'contacts';

export interface TlsFiles {
  /** PEM certificate chain. */
  certFile: string;
  /** PEM private key. */
  keyFile: string;
}

export interface ServerConfig {
  nodeId: string;
  host: string;
  httpPort: number;
  tcpPort: number;
  dataDir: string;
  adminKey: string;
  tokenSecret: string;
  /**
   * Earlier token secrets still accepted at login (secret rotation): tokens
   * are signed with tokenSecret and verified with it or any of these.
   */
  previousTokenSecrets: string[];
  /**
   * A file of token secrets, one per line, the first signing: when set, it
   * replaces tokenSecret/previousTokenSecrets and is followed, so a rotation
   * (write the new secret first, keep the old one below it until its tokens
   * expire) needs no restart and drops no connection.
   */
  tokenSecretsFile?: string;
  /** True when the admin key was generated at start (the quick start prints it). */
  generatedAdminKey: boolean;
  tokenTtlSeconds: number;
  loginTimeoutMs: number;
  pingIntervalMs: number;
  sqliteSynchronous: 'full' | 'normal';
  /** Multi-login policy: any number of devices, one per platform, or one in all. */
  loginPolicy: 'multi' | 'platform' | 'single';
  /** How long a sender may recall a message, ms. */
  recallWindowMs: number;
  /** Downlink routing: `targeted` (session lookup, per-gateway streams) or `broadcast` (one stream, every gateway filters). */
  routing: 'targeted' | 'broadcast';
  /** Host written into the public addresses gateways announce (defaults to host). */
  publicHost: string;
  /** Distributed mode: Redis for bus, sessions and registry (`longlink gateway`, `longlink logic`). */
  redisUrl?: string;
  /** Distributed mode: PostgreSQL for the store (`longlink logic`). */
  postgresUrl?: string;
  /** Key prefix in Redis, so several clusters can share one. */
  redisPrefix: string;
  /** Uplink shard streams; the same on every node of a cluster. */
  busShards: number;
  /** Shard lease: a logic node silent this long loses its shards. */
  leaseMs: number;
  /** Registry TTL: a gateway silent this long is dead and its sessions are dropped. */
  nodeTtlMs: number;
  /** PostgreSQL connections per logic node. */
  postgresPool: number;
  /**
   * `POST /api/v1/dev/token` (tokens without the admin key, for the web page's
   * dev login): true or false when set (LONGLINK_DEV_LOGIN=1|0); unset, the
   * embedded server turns it on only for a loopback quick start with generated
   * dev secrets, and cluster roles never.
   */
  devLogin?: boolean;
  /** TLS for the TCP gateway (tls://) and the HTTP port (https, wss). Off when unset. */
  tls?: TlsFiles;
  /** Who may query or watch a user's presence. @default 'all' */
  presenceVisibility: PresenceVisibility;
  /** Bearer key GET /metrics asks for; open when unset (serve the ports on an internal network). */
  metricsKey?: string;
  /** Log level: fatal, error, warn, info, debug, trace or silent. @default 'info' */
  logLevel: LogLevel;
  limits: Limits;
}

/**
 * Every default in one place: the settings' (a flag or LONGLINK_* variable
 * overrides each) and the tuning that has no setting. Roles take their
 * options from the loaded configuration and these, never from literals of
 * their own.
 */
export const DEFAULTS = {
  host: '127.0.0.1',
  httpPort: 8080,
  tcpPort: 9000,
  dataDir: './data',
  tokenTtlSeconds: 86400,
  loginTimeoutMs: 10_000,
  pingIntervalMs: 25_000,
  recallWindowMs: 120_000,
  redisPrefix: 'll:',
  busShards: 16,
  leaseMs: 10_000,
  nodeTtlMs: 15_000,
  postgresPool: 10,
  /** Largest HTTP API request body, bytes. */
  maxBodyBytes: 64 * 1024,
  limits: {
    maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    maxTextBytes: 16 * 1024,
    ratePerSecond: 200,
    rateBurst: 400,
    maxOutboundBytes: 4 * 1024 * 1024,
    maxGroupMembers: 20_000,
    userMessagesPerSecond: 200,
    maxConnectionsPerUser: 20,
    loginAttemptsPerMinute: 60,
  },
  /** Logic's tuning (no setting yet). */
  logic: {
    /** Messages per sync page when the client asks for 0 or more. */
    syncPageLimit: 200,
    /** Messages per history page, likewise. */
    historyPageLimit: 100,
    /** Groups larger than this send read receipts only to the reader's devices. */
    receiptFanoutMaxMembers: 200,
    /** Conversations listed, most recent first. */
    maxListed: 1000,
    /** Users per presence query or subscription. */
    maxWatched: 100,
    /** One typing event per user and conversation per this many ms. */
    typingIntervalMs: 1000,
    /** Groups larger than this get no typing events. */
    typingMaxMembers: 500,
  },
} as const;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export class ConfigError extends Error {}

type Source = Record<string, string | undefined>;

function pick(flags: Source, env: Source, flag: string): string | undefined {
  const fromFlag = flags[flag];
  if (fromFlag !== undefined) return fromFlag;
  return env[envName(flag)];
}

function int(flags: Source, env: Source, flag: string, fallback: number, min: number, max: number): number {
  const raw = pick(flags, env, flag);
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`--${flag} / ${envName(flag)} must be an integer in ${min}..${max}, got "${raw}"`);
  }
  return n;
}

function url(flags: Source, env: Source, flag: string, schemes: string[]): string | undefined {
  const raw = pick(flags, env, flag);
  if (raw === undefined || raw === '') return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`--${flag} / ${envName(flag)} is not a URL`);
  }
  if (!schemes.includes(parsed.protocol)) throw new ConfigError(`--${flag} / ${envName(flag)} must start with ${schemes.map((x) => `${x}//`).join(' or ')}`);
  return raw;
}

function bool(flags: Source, env: Source, flag: string): boolean | undefined {
  const raw = pick(flags, env, flag);
  if (raw === undefined || raw === '') return undefined;
  if (['1', 'true', 'on', 'yes'].includes(raw)) return true;
  if (['0', 'false', 'off', 'no'].includes(raw)) return false;
  throw new ConfigError(`--${flag} / ${envName(flag)} must be 1 or 0, got "${raw}"`);
}

function envName(flag: string): string {
  return `LONGLINK_${flag.toUpperCase().replace(/-/g, '_')}`;
}

export function loadServerConfig(flags: Source, env: Source = process.env): ServerConfig {
  const adminKeyRaw = pick(flags, env, 'admin-key');
  const secretRaw = pick(flags, env, 'token-secret');
  if (adminKeyRaw !== undefined && adminKeyRaw.length < 16) throw new ConfigError('LONGLINK_ADMIN_KEY must be at least 16 characters');
  if (secretRaw !== undefined && secretRaw.length < 16) throw new ConfigError('LONGLINK_TOKEN_SECRET must be at least 16 characters');
  const sync = pick(flags, env, 'sqlite-synchronous') ?? 'full';
  if (sync !== 'full' && sync !== 'normal') throw new ConfigError('LONGLINK_SQLITE_SYNCHRONOUS must be full or normal');
  const dataDir = resolve(pick(flags, env, 'data-dir') ?? DEFAULTS.dataDir);
  const loginPolicy = pick(flags, env, 'login-policy') ?? 'multi';
  if (loginPolicy !== 'multi' && loginPolicy !== 'platform' && loginPolicy !== 'single') {
    throw new ConfigError('LONGLINK_LOGIN_POLICY must be multi, platform or single');
  }
  const previousRaw = pick(flags, env, 'previous-token-secrets');
  const previousTokenSecrets = previousRaw ? previousRaw.split(',').map((x) => x.trim()).filter((x) => x !== '') : [];
  if (previousTokenSecrets.some((x) => x.length < 16)) throw new ConfigError('every LONGLINK_PREVIOUS_TOKEN_SECRETS entry must be at least 16 characters');
  const secretsFile = pick(flags, env, 'token-secrets-file') || undefined;
  const certFile = pick(flags, env, 'tls-cert');
  const keyFile = pick(flags, env, 'tls-key');
  if (Boolean(certFile) !== Boolean(keyFile)) throw new ConfigError('LONGLINK_TLS_CERT and LONGLINK_TLS_KEY go together');
  const presenceVisibility = pick(flags, env, 'presence-visibility') ?? 'all';
  if (presenceVisibility !== 'all' && presenceVisibility !== 'contacts') throw new ConfigError('LONGLINK_PRESENCE_VISIBILITY must be all or contacts');
  const metricsKey = pick(flags, env, 'metrics-key') || undefined;
  if (metricsKey !== undefined && metricsKey.length < 16) throw new ConfigError('LONGLINK_METRICS_KEY must be at least 16 characters');
  const logLevel = pick(flags, env, 'log-level') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new ConfigError(`LONGLINK_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  const routing = pick(flags, env, 'routing') ?? 'targeted';
  if (routing !== 'targeted' && routing !== 'broadcast') throw new ConfigError('LONGLINK_ROUTING must be targeted or broadcast');
  return {
    nodeId: pick(flags, env, 'node-id') ?? `node-${randomBytes(3).toString('hex')}`,
    host: pick(flags, env, 'host') ?? DEFAULTS.host,
    httpPort: int(flags, env, 'http-port', DEFAULTS.httpPort, 0, 65535),
    tcpPort: int(flags, env, 'tcp-port', DEFAULTS.tcpPort, 0, 65535),
    dataDir,
    adminKey: adminKeyRaw ?? randomBytes(24).toString('base64url'),
    tokenSecret: secretRaw ?? randomBytes(32).toString('base64url'),
    previousTokenSecrets,
    tokenSecretsFile: secretsFile ? resolve(secretsFile) : undefined,
    generatedAdminKey: adminKeyRaw === undefined,
    tokenTtlSeconds: int(flags, env, 'token-ttl', DEFAULTS.tokenTtlSeconds, 10, 90 * 86400),
    loginTimeoutMs: int(flags, env, 'login-timeout-ms', DEFAULTS.loginTimeoutMs, 100, 600_000),
    pingIntervalMs: int(flags, env, 'ping-interval-ms', DEFAULTS.pingIntervalMs, 100, 600_000),
    sqliteSynchronous: sync,
    loginPolicy,
    routing,
    recallWindowMs: int(flags, env, 'recall-window-ms', DEFAULTS.recallWindowMs, 0, 30 * 86400 * 1000),
    publicHost: pick(flags, env, 'public-host') ?? pick(flags, env, 'host') ?? DEFAULTS.host,
    redisUrl: url(flags, env, 'redis-url', ['redis:', 'rediss:']),
    postgresUrl: url(flags, env, 'postgres-url', ['postgres:', 'postgresql:']),
    redisPrefix: pick(flags, env, 'redis-prefix') ?? DEFAULTS.redisPrefix,
    busShards: int(flags, env, 'bus-shards', DEFAULTS.busShards, 1, 4096),
    leaseMs: int(flags, env, 'lease-ms', DEFAULTS.leaseMs, 500, 600_000),
    nodeTtlMs: int(flags, env, 'node-ttl-ms', DEFAULTS.nodeTtlMs, 500, 600_000),
    postgresPool: int(flags, env, 'postgres-pool', DEFAULTS.postgresPool, 1, 1000),
    devLogin: bool(flags, env, 'dev-login'),
    tls: certFile && keyFile ? { certFile: resolve(certFile), keyFile: resolve(keyFile) } : undefined,
    presenceVisibility,
    metricsKey,
    logLevel: logLevel as LogLevel,
    limits: {
      maxFrameBytes: int(flags, env, 'max-frame-bytes', DEFAULTS.limits.maxFrameBytes, 1024, 16 * 1024 * 1024),
      maxTextBytes: int(flags, env, 'max-text-bytes', DEFAULTS.limits.maxTextBytes, 1, 16 * 1024 * 1024),
      ratePerSecond: int(flags, env, 'rate-limit', DEFAULTS.limits.ratePerSecond, 1, 1_000_000),
      rateBurst: int(flags, env, 'rate-burst', DEFAULTS.limits.rateBurst, 1, 1_000_000),
      maxOutboundBytes: int(flags, env, 'max-outbound-bytes', DEFAULTS.limits.maxOutboundBytes, 64 * 1024, 1024 * 1024 * 1024),
      maxGroupMembers: int(flags, env, 'max-group-members', DEFAULTS.limits.maxGroupMembers, 2, 1_000_000),
      userMessagesPerSecond: int(flags, env, 'user-messages-per-second', DEFAULTS.limits.userMessagesPerSecond, 1, 1_000_000),
      maxConnectionsPerUser: int(flags, env, 'max-connections-per-user', DEFAULTS.limits.maxConnectionsPerUser, 1, 100_000),
      loginAttemptsPerMinute: int(flags, env, 'login-attempts-per-minute', DEFAULTS.limits.loginAttemptsPerMinute, 1, 1_000_000),
    },
  };
}

export function databasePath(config: ServerConfig): string {
  return join(config.dataDir, 'longlink.db');
}

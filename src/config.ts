// Configuration: read and validated once at start, then passed down.
// Every option can come from a flag (--http-port) or the environment
// (LONGLINK_HTTP_PORT); flags win.
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { DEFAULT_MAX_FRAME_BYTES } from './protocol/index.js';
import { clusterNodesOf, clusterUrl } from './engines/redis-address.js';

export interface Limits {
  /** Largest frame, bytes. @default 65536 */
  maxFrameBytes: number;
  /** Largest message text, UTF-8 bytes. @default 16384 */
  maxTextBytes: number;
  /** Largest custom payload of a message (Content.payload), bytes. @default 16384 */
  maxPayloadBytes: number;
  /** Frames per second per connection, sustained. @default 200 */
  ratePerSecond: number;
  /** Frames a connection may send at once above the rate. @default 400 */
  rateBurst: number;
  /** Bytes waiting to be written to a connection before it is dropped as a slow consumer. @default 4 MiB */
  maxOutboundBytes: number;
  /** Largest group, owner included. @default 20000 */
  maxGroupMembers: number;
  /** Groups one user may be a current member of; adding one more is refused (TOO_MANY_GROUPS). @default 1000 */
  maxGroupsPerUser: number;
  /** Messages (sends) per second per user, all its connections on one gateway together. @default 200 */
  userMessagesPerSecond: number;
  /** Connections one user may hold at once, cluster-wide. @default 20 */
  maxConnectionsPerUser: number;
  /**
   * Failed logins per minute, per gateway: of forged or garbage tokens per
   * client address, and of tokens that verify but fail (expired, revoked) per
   * client address and user; past it, those logins are refused for the rest
   * of the minute. A valid token is never refused for its address's forged ones. @default 60
   */
  loginAttemptsPerMinute: number;
  /** Largest frame before login (the login itself): all a connection not logged in may make the gateway buffer, bytes. @default 8192 */
  maxLoginFrameBytes: number;
  /** Connections per client address per gateway, logged in or not. @default 1000 */
  maxConnectionsPerAddress: number;
  /** Connections not yet logged in per gateway. @default 2000 */
  maxPendingLogins: number;
}

/**
 * Who may see a user's presence: anyone logged in, or only its contacts. A
 * contact of user A is a user A has written to: A sent a message (or acted)
 * in a conversation (1:1 or group) both are current members of.
 */
export type PresenceVisibility = 'all' | 'contacts';

/**
 * Who may add a user to a group (on create or add): anyone, only the user's
 * contacts (users it has written to, as above), or nobody but the HTTP API.
 */
export type GroupAddPolicy = 'anyone' | 'contacts' | 'nobody';

export interface TlsFiles {
  /** PEM certificate chain. */
  certFile: string;
  /** PEM private key. */
  keyFile: string;
}

/** Another datacenter, as this one reaches it (src/dc/). */
export interface DcPeer {
  name: string;
  /** Its Redis (its bus: forwarded writes, its committed stream). */
  redisUrl: string;
  /** Its PostgreSQL (what the sync service reads to fill a gap). */
  postgresUrl: string;
}

export interface ServerConfig {
  nodeId: string;
  /**
   * The datacenter this process belongs to (LONGLINK_DC). Conversations made
   * here are homed here; see src/dc/homes.ts. @default 'dc1'
   */
  dc: string;
  /**
   * The other datacenters (LONGLINK_DC_PEERS="b=redis://… b=postgres://…
   * c=…": whitespace-separated name=url, each peer with one Redis and one
   * PostgreSQL URL). None: a single datacenter.
   */
  dcPeers: DcPeer[];
  /**
   * When a write to a conversation is acked (LONGLINK_DC_ACK): `local`, once
   * its home committed it; `replicated`, once another datacenter holds it too
   * (src/dc/replication.ts). @default 'local'
   */
  dcAck: 'local' | 'replicated';
  /**
   * A Redis outside every datacenter holding which one serves each one's homes
   * (LONGLINK_DC_WITNESS): with it, a datacenter unheard for
   * dcFailoverAfterMs is failed over by the others on their own
   * (src/dc/witness.ts); without it, only by `longlink dc failover`.
   */
  dcWitnessUrl: string | undefined;
  /** LONGLINK_DC_FAILOVER_AFTER_MS: a datacenter's lease at the witness, and how long it is unheard before it is failed over. @default 10000 */
  dcFailoverAfterMs: number;
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
  /**
   * Distributed mode: Redis for bus, sessions and registry (`longlink gateway`, `longlink logic`):
   * `redis://…` (LONGLINK_REDIS_URL), or `redis-cluster://host:port,…` for a Redis Cluster (LONGLINK_REDIS_CLUSTER).
   */
  redisUrl?: string;
  /** On a Redis Cluster: replicas that must hold a bus write before a publish is done (WAIT); 0: none. */
  redisReplicas: number;
  /** Distributed mode: PostgreSQL for the store (`longlink logic`). */
  postgresUrl?: string;
  /** Key prefix in Redis, so several clusters can share one. */
  redisPrefix: string;
  /** Uplink shard streams; the same on every node of a cluster. */
  busShards: number;
  /** Stream bounds (faults/README.md, "Stream bounds"): entries per uplink shard / downlink stream (XADD MAXLEN ~). */
  busUpMaxLength: number;
  busDownMaxLength: number;
  /** Entries older than this are trimmed, read or not, ms. */
  busUpMaxAgeMs: number;
  busDownMaxAgeMs: number;
  /** Redis memory one stream may take before its oldest entries are trimmed, bytes. */
  busUpMaxBytes: number;
  busDownMaxBytes: number;
  /** Shard lease: a logic node silent this long loses its shards. */
  leaseMs: number;
  /** Registry TTL: a gateway silent this long is dead and its sessions are dropped. */
  nodeTtlMs: number;
  /** PostgreSQL connections per logic node. */
  postgresPool: number;
  /**
   * `POST /api/v1/dev/token` (tokens without the admin key, for the web page's
   * dev login): on only when set so (LONGLINK_DEV_LOGIN=1), never implied.
   * `longlink start` sets it for a newcomer's quick start (loopback host, no
   * admin key or token secret configured) and says so; see src/cli/start.ts.
   */
  devLogin?: boolean;
  /** TLS for the TCP gateway (tls://) and the HTTP port (https, wss). Off when unset. */
  tls?: TlsFiles;
  /** Who may query or watch a user's presence. @default 'all' */
  presenceVisibility: PresenceVisibility;
  /** Who may add a user to a group. @default 'contacts' */
  groupAddPolicy: GroupAddPolicy;
  /** Bearer key GET /metrics asks for; open when unset (serve the ports on an internal network). */
  metricsKey?: string;
  /**
   * Addresses (or CIDR ranges) of reverse proxies whose X-Forwarded-For is
   * believed (WebSocket): a connection from one counts as the right-most
   * forwarded address that is not itself a trusted proxy. @default none
   */
  trustedProxies: string[];
  /**
   * Origins (`https://app.example.com`) of pages served elsewhere that may
   * use the HTTP API and /ws from a browser; their host names are accepted
   * as Host too. `*` allows any. @default none (the server's own names only)
   */
  allowedOrigins: string[];
  /** Log level: fatal, error, warn, info, debug, trace or silent. @default 'info' */
  logLevel: LogLevel;
  /**
   * Message retention: messages (and timeline events) stored more than this
   * many days ago are removed (src/logic/retention.ts); seqs and cursors are
   * kept. 0 keeps everything forever. @default 0
   */
  retentionDays: number;
  limits: Limits;
  /** Full-text search of messages (LONGLINK_SEARCH): off, no text index is kept and searches are refused. @default true */
  search: boolean;
  /** Uploads (POST /api/v1/files). */
  files: FileSettings;
  /** Offline push notifications: the providers configured (none: none are sent). */
  push: PushSettings;
}

export interface FileSettings {
  /** The largest file, bytes (LONGLINK_MAX_FILE_BYTES). @default 10 MiB */
  maxBytes: number;
  /** Files one user may upload per hour (LONGLINK_UPLOADS_PER_HOUR). @default 100 */
  perHour: number;
  /** Bytes one user may upload per hour (LONGLINK_UPLOAD_BYTES_PER_HOUR). @default 200 MiB */
  bytesPerHour: number;
  /**
   * Where file bytes live (LONGLINK_FILES_DIR): a folder (shared by every
   * node of a cluster). Unset: `<data dir>/files` in one process, the
   * cluster's PostgreSQL otherwise.
   */
  dir?: string;
}

export interface PushSettings {
  /** The business's own push service: a signed POST per notification (LONGLINK_PUSH_WEBHOOK_URL, LONGLINK_PUSH_WEBHOOK_SECRET). */
  webhook?: { url: string; secret: string };
  /** APNs (LONGLINK_APNS_KEY_FILE: the .p8 key, LONGLINK_APNS_KEY_ID, LONGLINK_APNS_TEAM_ID, LONGLINK_APNS_TOPIC, LONGLINK_APNS_URL). */
  apns?: { keyFile: string; keyId: string; teamId: string; topic: string; url?: string };
  /** FCM (LONGLINK_FCM_SERVICE_ACCOUNT_FILE: the service account's JSON, LONGLINK_FCM_URL). */
  fcm?: { serviceAccountFile: string; url?: string };
  /** A burst's first message waits this long for more before its notification goes (LONGLINK_PUSH_COLLAPSE_MS). @default 2000 */
  collapseMs: number;
}

function fileSettings(flags: Source, env: Source): FileSettings {
  const dir = pick(flags, env, 'files-dir');
  return {
    maxBytes: int(flags, env, 'max-file-bytes', 10 * 1024 * 1024, 1, 64 * 1024 * 1024),
    perHour: int(flags, env, 'uploads-per-hour', 100, 1, 1_000_000),
    bytesPerHour: int(flags, env, 'upload-bytes-per-hour', 200 * 1024 * 1024, 1, 1024 * 1024 * 1024 * 1024),
    ...(dir ? { dir: resolve(dir) } : {}),
  };
}

function pushSettings(flags: Source, env: Source): PushSettings {
  const out: PushSettings = { collapseMs: int(flags, env, 'push-collapse-ms', 2000, 0, 600_000) };
  const webhookUrl = url(flags, env, 'push-webhook-url', ['http:', 'https:']);
  const webhookSecret = pick(flags, env, 'push-webhook-secret');
  if (webhookUrl !== undefined) {
    if (webhookSecret === undefined || webhookSecret.length < 16) throw new ConfigError('LONGLINK_PUSH_WEBHOOK_URL needs LONGLINK_PUSH_WEBHOOK_SECRET (at least 16 characters) to sign with');
    out.webhook = { url: webhookUrl, secret: webhookSecret };
  }
  const keyFile = pick(flags, env, 'apns-key-file');
  if (keyFile) {
    const keyId = pick(flags, env, 'apns-key-id');
    const teamId = pick(flags, env, 'apns-team-id');
    const topic = pick(flags, env, 'apns-topic');
    if (!keyId || !teamId || !topic) throw new ConfigError('LONGLINK_APNS_KEY_FILE needs LONGLINK_APNS_KEY_ID, LONGLINK_APNS_TEAM_ID and LONGLINK_APNS_TOPIC');
    const apnsUrl = url(flags, env, 'apns-url', ['http:', 'https:']);
    out.apns = { keyFile: resolve(keyFile), keyId, teamId, topic, ...(apnsUrl ? { url: apnsUrl } : {}) };
  }
  const account = pick(flags, env, 'fcm-service-account-file');
  if (account) {
    const fcmUrl = url(flags, env, 'fcm-url', ['http:', 'https:']);
    out.fcm = { serviceAccountFile: resolve(account), ...(fcmUrl ? { url: fcmUrl } : {}) };
  }
  return out;
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
  busUpMaxLength: 200_000,
  busDownMaxLength: 20_000,
  busUpMaxAgeMs: 600_000,
  busDownMaxAgeMs: 30_000,
  busUpMaxBytes: 64 * 1024 * 1024,
  busDownMaxBytes: 64 * 1024 * 1024,
  leaseMs: 10_000,
  nodeTtlMs: 15_000,
  postgresPool: 10,
  /** Days a message is kept; 0: forever. */
  retentionDays: 0,
  /** Retention's tuning (no setting). */
  retention: {
    /** A pass every this many ms. */
    intervalMs: 60_000,
    /** Messages removed per store call (one short transaction each). */
    batch: 1000,
    /** Store calls per pass at most, so one pass is bounded; the rest waits for the next one. */
    maxBatchesPerPass: 100,
  },
  /** A presence watch lasts this long under visibility 'contacts' (the SDK renews it every 4 minutes). */
  presenceWatchTtlMs: 10 * 60_000,
  /** Largest HTTP API request body, bytes. */
  maxBodyBytes: 64 * 1024,
  limits: {
    maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    maxTextBytes: 16 * 1024,
    maxPayloadBytes: 16 * 1024,
    ratePerSecond: 200,
    rateBurst: 400,
    maxOutboundBytes: 4 * 1024 * 1024,
    maxGroupMembers: 20_000,
    maxGroupsPerUser: 1000,
    userMessagesPerSecond: 200,
    maxConnectionsPerUser: 20,
    loginAttemptsPerMinute: 60,
    maxLoginFrameBytes: 8 * 1024,
    maxConnectionsPerAddress: 1000,
    maxPendingLogins: 2000,
  },
  /** Logic's tuning (no setting yet). */
  logic: {
    /** Messages per sync page when the client asks for 0 or more. */
    syncPageLimit: 200,
    /** Messages per history page, likewise. */
    historyPageLimit: 100,
    /** Groups larger than this send read receipts only to the reader's devices. */
    receiptFanoutMaxMembers: 200,
    /** Conversations per list page when the client asks for 0. */
    conversationsPageLimit: 100,
    /** Most conversations per list page, whatever the client asks. */
    conversationsPageMax: 500,
    /** A reply to a read (a sync or history page) stops at about this many bytes of messages. */
    replyMaxBytes: 256 * 1024,
    /** Reads (sync, history, lists, presence, group info) running at once on a logic node (under half the default PostgreSQL pool, so writes find connections). */
    readsAtOnce: 4,
    /** Reads of one user waiting on a logic node; more are refused with BUSY. */
    readsQueuedPerUser: 32,
    /** Bytes of read replies per second one user may take, sustained: past it its reads wait (others' do not). */
    readBytesPerSecond: 1024 * 1024,
    /** Bytes of read replies one user may take at once above that rate. */
    readBytesBurst: 4 * 1024 * 1024,
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

/** A comma-separated setting, entries trimmed, empty ones dropped. */
function list(flags: Source, env: Source, flag: string): string[] {
  return (pick(flags, env, flag) ?? '').split(',').map((x) => x.trim()).filter((x) => x !== '');
}

function isIpOrCidr(entry: string): boolean {
  const [address, prefix, extra] = entry.split('/');
  const family = isIP(address ?? '');
  if (family === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;
  const bits = Number(prefix);
  return /^\d{1,3}$/.test(prefix) && bits <= (family === 4 ? 32 : 128);
}

/** scheme://host[:port] and nothing more (a trailing slash allowed). */
function isOrigin(entry: string): boolean {
  try {
    const u = new URL(entry);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.username === '' && u.password === ''
      && u.pathname === '/' && !/[?#]/.test(entry);
  } catch {
    return false;
  }
}

function envName(flag: string): string {
  return `LONGLINK_${flag.toUpperCase().replace(/-/g, '_')}`;
}

const DC_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;

function dcName(raw: string, what: string): string {
  if (!DC_NAME.test(raw)) throw new ConfigError(`${what} must be 1-32 lowercase letters, digits and dashes, got "${raw}"`);
  return raw;
}

/**
 * Where the cluster's Redis is: LONGLINK_REDIS_URL (one server) or
 * LONGLINK_REDIS_CLUSTER (a Redis Cluster's seed nodes, host:port,host:port,…),
 * as the address the engines take (src/engines/redis-shared.ts).
 */
function redisTarget(flags: Source, env: Source): string | undefined {
  const single = url(flags, env, 'redis-url', ['redis:', 'rediss:']);
  const raw = pick(flags, env, 'redis-cluster');
  if (raw === undefined || raw === '') return single;
  if (single !== undefined) throw new ConfigError('give LONGLINK_REDIS_URL or LONGLINK_REDIS_CLUSTER, not both');
  try {
    return clusterUrl(clusterNodesOf(`redis-cluster://${raw}`)!);
  } catch (err) {
    throw new ConfigError(`--redis-cluster / LONGLINK_REDIS_CLUSTER: seed nodes as host:port,host:port,… (${(err as Error).message})`);
  }
}

function redisPrefixOf(prefix: string): string {
  if (/[{}]/.test(prefix)) throw new ConfigError(`--redis-prefix / LONGLINK_REDIS_PREFIX: no braces (on a Redis Cluster they would decide which keys share a slot), got "${prefix}"`);
  return prefix;
}

/** A redis:// URL, or undefined when not given. */
function redisUrlOf(raw: string | undefined, name: string): string | undefined {
  if (raw === undefined || raw === '') return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a URL`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') throw new ConfigError(`${name} must be a redis:// URL, got ${parsed.protocol}`);
  return raw;
}

/** LONGLINK_DC_PEERS: whitespace-separated name=url tokens; each peer needs a redis:// and a postgres:// URL. */
function dcPeers(raw: string | undefined, self: string): DcPeer[] {
  const peers = new Map<string, Partial<DcPeer>>();
  for (const token of (raw ?? '').split(/\s+/).filter((t) => t !== '')) {
    const eq = token.indexOf('=');
    if (eq <= 0) throw new ConfigError(`every LONGLINK_DC_PEERS entry is name=url, got "${token}"`);
    const name = dcName(token.slice(0, eq), 'a LONGLINK_DC_PEERS name');
    if (name === self) throw new ConfigError(`LONGLINK_DC_PEERS names this datacenter (${self}) itself`);
    let parsed: URL;
    try {
      parsed = new URL(token.slice(eq + 1));
    } catch {
      throw new ConfigError(`LONGLINK_DC_PEERS: ${name}'s URL is not a URL`);
    }
    const peer = peers.get(name) ?? { name };
    if (parsed.protocol === 'redis:' || parsed.protocol === 'rediss:') peer.redisUrl = token.slice(eq + 1);
    else if (parsed.protocol === 'postgres:' || parsed.protocol === 'postgresql:') peer.postgresUrl = token.slice(eq + 1);
    else throw new ConfigError(`LONGLINK_DC_PEERS: ${name}'s URLs are redis:// and postgres://, got ${parsed.protocol}`);
    peers.set(name, peer);
  }
  return [...peers.values()].map((p) => {
    if (!p.redisUrl || !p.postgresUrl) throw new ConfigError(`LONGLINK_DC_PEERS: ${p.name} needs both a redis:// and a postgres:// URL`);
    return p as DcPeer;
  });
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
  const groupAddPolicy = pick(flags, env, 'group-add-policy') ?? 'contacts';
  if (groupAddPolicy !== 'anyone' && groupAddPolicy !== 'contacts' && groupAddPolicy !== 'nobody') {
    throw new ConfigError('LONGLINK_GROUP_ADD_POLICY must be anyone, contacts or nobody');
  }
  const presenceVisibility = pick(flags, env, 'presence-visibility') ?? 'all';
  if (presenceVisibility !== 'all' && presenceVisibility !== 'contacts') throw new ConfigError('LONGLINK_PRESENCE_VISIBILITY must be all or contacts');
  const redisUrl = redisTarget(flags, env);
  const dc = dcName(pick(flags, env, 'dc') ?? 'dc1', 'LONGLINK_DC');
  const peers = dcPeers(pick(flags, env, 'dc-peers'), dc);
  if (peers.length > 0 && redisUrl !== undefined && clusterNodesOf(redisUrl)) {
    throw new ConfigError('datacenters (LONGLINK_DC_PEERS) run on one Redis server per datacenter for now, not on a Redis Cluster (LONGLINK_REDIS_CLUSTER)');
  }
  const metricsKey = pick(flags, env, 'metrics-key') || undefined;
  if (metricsKey !== undefined && metricsKey.length < 16) throw new ConfigError('LONGLINK_METRICS_KEY must be at least 16 characters');
  const trustedProxies = list(flags, env, 'trusted-proxies');
  for (const p of trustedProxies) {
    if (!isIpOrCidr(p)) throw new ConfigError(`every LONGLINK_TRUSTED_PROXIES entry must be an IP address or CIDR range (10.0.0.0/8), got "${p}"`);
  }
  const allowedOrigins = list(flags, env, 'allowed-origins');
  for (const o of allowedOrigins) {
    if (o !== '*' && !isOrigin(o)) throw new ConfigError(`every LONGLINK_ALLOWED_ORIGINS entry must be an origin (https://app.example.com[:port]) or *, got "${o}"`);
  }
  const logLevel = pick(flags, env, 'log-level') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new ConfigError(`LONGLINK_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  const routing = pick(flags, env, 'routing') ?? 'targeted';
  if (routing !== 'targeted' && routing !== 'broadcast') throw new ConfigError('LONGLINK_ROUTING must be targeted or broadcast');
  const dcAck = pick(flags, env, 'dc-ack') ?? 'local';
  if (dcAck !== 'local' && dcAck !== 'replicated') throw new ConfigError('LONGLINK_DC_ACK must be local or replicated');
  return {
    nodeId: pick(flags, env, 'node-id') ?? `node-${randomBytes(3).toString('hex')}`,
    dc,
    dcPeers: peers,
    dcAck,
    dcWitnessUrl: redisUrlOf(pick(flags, env, 'dc-witness'), 'LONGLINK_DC_WITNESS'),
    dcFailoverAfterMs: int(flags, env, 'dc-failover-after-ms', 10_000, 3000, 3_600_000),
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
    redisUrl,
    redisReplicas: int(flags, env, 'redis-replicas', 1, 0, 16),
    postgresUrl: url(flags, env, 'postgres-url', ['postgres:', 'postgresql:']),
    redisPrefix: redisPrefixOf(pick(flags, env, 'redis-prefix') ?? DEFAULTS.redisPrefix),
    busShards: int(flags, env, 'bus-shards', DEFAULTS.busShards, 1, 4096),
    busUpMaxLength: int(flags, env, 'bus-up-max-length', DEFAULTS.busUpMaxLength, 1000, 100_000_000),
    busDownMaxLength: int(flags, env, 'bus-down-max-length', DEFAULTS.busDownMaxLength, 1000, 100_000_000),
    busUpMaxAgeMs: int(flags, env, 'bus-up-max-age-ms', DEFAULTS.busUpMaxAgeMs, 5000, 7 * 86400 * 1000),
    busDownMaxAgeMs: int(flags, env, 'bus-down-max-age-ms', DEFAULTS.busDownMaxAgeMs, 5000, 86400 * 1000),
    busUpMaxBytes: int(flags, env, 'bus-up-max-bytes', DEFAULTS.busUpMaxBytes, 1024 * 1024, 64 * 1024 * 1024 * 1024),
    busDownMaxBytes: int(flags, env, 'bus-down-max-bytes', DEFAULTS.busDownMaxBytes, 1024 * 1024, 64 * 1024 * 1024 * 1024),
    leaseMs: int(flags, env, 'lease-ms', DEFAULTS.leaseMs, 500, 600_000),
    nodeTtlMs: int(flags, env, 'node-ttl-ms', DEFAULTS.nodeTtlMs, 500, 600_000),
    postgresPool: int(flags, env, 'postgres-pool', DEFAULTS.postgresPool, 1, 1000),
    devLogin: bool(flags, env, 'dev-login'),
    tls: certFile && keyFile ? { certFile: resolve(certFile), keyFile: resolve(keyFile) } : undefined,
    presenceVisibility,
    groupAddPolicy,
    metricsKey,
    trustedProxies,
    allowedOrigins: allowedOrigins.map((o) => (o === '*' ? o : new URL(o).origin)),
    logLevel: logLevel as LogLevel,
    retentionDays: int(flags, env, 'retention-days', DEFAULTS.retentionDays, 0, 36_500),
    search: bool(flags, env, 'search') ?? true,
    files: fileSettings(flags, env),
    push: pushSettings(flags, env),
    limits: {
      maxFrameBytes: int(flags, env, 'max-frame-bytes', DEFAULTS.limits.maxFrameBytes, 1024, 16 * 1024 * 1024),
      maxTextBytes: int(flags, env, 'max-text-bytes', DEFAULTS.limits.maxTextBytes, 1, 16 * 1024 * 1024),
      maxPayloadBytes: int(flags, env, 'max-payload-bytes', DEFAULTS.limits.maxPayloadBytes, 0, 16 * 1024 * 1024),
      ratePerSecond: int(flags, env, 'rate-limit', DEFAULTS.limits.ratePerSecond, 1, 1_000_000),
      rateBurst: int(flags, env, 'rate-burst', DEFAULTS.limits.rateBurst, 1, 1_000_000),
      maxOutboundBytes: int(flags, env, 'max-outbound-bytes', DEFAULTS.limits.maxOutboundBytes, 64 * 1024, 1024 * 1024 * 1024),
      maxGroupMembers: int(flags, env, 'max-group-members', DEFAULTS.limits.maxGroupMembers, 2, 1_000_000),
      maxGroupsPerUser: int(flags, env, 'max-groups-per-user', DEFAULTS.limits.maxGroupsPerUser, 1, 1_000_000),
      userMessagesPerSecond: int(flags, env, 'user-messages-per-second', DEFAULTS.limits.userMessagesPerSecond, 1, 1_000_000),
      maxConnectionsPerUser: int(flags, env, 'max-connections-per-user', DEFAULTS.limits.maxConnectionsPerUser, 1, 100_000),
      loginAttemptsPerMinute: int(flags, env, 'login-attempts-per-minute', DEFAULTS.limits.loginAttemptsPerMinute, 1, 1_000_000),
      maxLoginFrameBytes: int(flags, env, 'max-login-frame-bytes', DEFAULTS.limits.maxLoginFrameBytes, 1024, 16 * 1024 * 1024),
      maxConnectionsPerAddress: int(flags, env, 'max-connections-per-address', DEFAULTS.limits.maxConnectionsPerAddress, 1, 10_000_000),
      maxPendingLogins: int(flags, env, 'max-pending-logins', DEFAULTS.limits.maxPendingLogins, 1, 10_000_000),
    },
  };
}

export function databasePath(config: ServerConfig): string {
  return join(config.dataDir, 'longlink.db');
}

// What a gateway is built from: its options and the engines it talks to.
// Apart from gateway.ts so every part of the gateway can name them without
// importing the class that wires those parts together.
import type { Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { Registry } from '../engines/registry.js';
import type { TokenService } from '../auth/tokens.js';
import type { GatewayMetrics } from '../observability/metrics.js';

/** A gateway's options, all given by the configuration (src/config.ts: loadServerConfig and DEFAULTS). */
export interface GatewayOptions {
  nodeId: string;
  /** How long a presence watch lasts once logic checked it (Infinity: until replaced); the client subscribes again to keep it. */
  presenceWatchTtlMs: number;
  loginTimeoutMs: number;
  pingIntervalMs: number;
  maxFrameBytes: number;
  maxTextBytes: number;
  ratePerSecond: number;
  rateBurst: number;
  maxOutboundBytes: number;
  /** Messages (send frames) per second per user, all its connections on this gateway together (burst: twice that). */
  userMessagesPerSecond: number;
  /** Connections one user may hold at once, cluster-wide (its sessions). */
  maxConnectionsPerUser: number;
  /**
   * Failed logins per minute on this gateway: forged or garbage tokens per
   * client address, and tokens that verify but fail (expired, revoked) per
   * client address and user; past it, those logins are refused until the
   * minute ends. A valid token is never refused for its address's forged ones.
   */
  loginAttemptsPerMinute: number;
  /** Largest first frame (the login): what a connection not logged in may have the gateway buffer. */
  maxLoginFrameBytes: number;
  /** Connections per client address on this gateway, logged in or not; one more is refused (CONNECTION_LIMITED). */
  maxConnectionsPerAddress: number;
  /** Connections not yet logged in on this gateway; one more is refused (CONNECTION_LIMITED). */
  maxPendingLogins: number;
  /** Reverse proxies (IP addresses, CIDR ranges) whose X-Forwarded-For names the client (WebSocket). */
  trustedProxies: readonly string[];
  /**
   * Names the HTTP port answers to besides the loopback names and IP literals
   * (the configured host and public host): a /ws upgrade with another Host is
   * refused (DNS rebinding).
   */
  hostNames: readonly string[];
  /** Origins of pages served elsewhere whose browsers may open /ws (`*`: any); their host names are accepted as Host too. */
  allowedOrigins: readonly string[];
  /**
   * Multi-login policy: `multi` — any number of devices (the same device id
   * replaces its older connection); `platform` — one device per platform;
   * `single` — one device in all.
   */
  loginPolicy: LoginPolicy;
  /**
   * Registry TTL: the gateway refreshes its entry every third of it; a gateway
   * not refreshed within it is dead to the cluster, which drops its sessions.
   */
  nodeTtlMs: number;
}

export type LoginPolicy = 'multi' | 'platform' | 'single';

export interface GatewayDeps {
  bus: Bus;
  sessions: Sessions;
  registry: Registry;
  tokens: TokenService;
  /** Counters for /metrics. @default none */
  metrics?: GatewayMetrics;
}

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
  /** Failed logins per client address and claimed user per minute on this gateway; past it, those logins are refused until the minute ends. */
  loginAttemptsPerMinute: number;
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

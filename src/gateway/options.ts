// What a gateway is built from: its options and the engines it talks to.
// Apart from gateway.ts so every part of the gateway can name them without
// importing the class that wires those parts together.
import type { Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { Registry } from '../engines/registry.js';
import type { Watches } from '../engines/watches.js';
import type { TokenService } from '../auth/tokens.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { Limits } from '../config.js';

/** The limits a gateway applies, as the configuration declares them (src/config.ts, Limits). */
type GatewayLimits = Pick<Limits,
  | 'maxFrameBytes' | 'maxTextBytes' | 'maxPayloadBytes' | 'ratePerSecond' | 'rateBurst' | 'maxOutboundBytes' | 'userMessagesPerSecond'
  | 'maxConnectionsPerUser' | 'loginAttemptsPerMinute' | 'maxLoginFrameBytes' | 'maxConnectionsPerAddress' | 'maxPendingLogins'>;

/** A gateway's options, all given by the configuration (src/config.ts: loadServerConfig and DEFAULTS). */
export interface GatewayOptions extends GatewayLimits {
  nodeId: string;
  /** The largest upload the HTTP API takes (told to clients in LoginResult.max_file_bytes). @default 0: not told */
  maxFileBytes?: number;
  /** How long a presence watch lasts once logic checked it (Infinity: until replaced); the client subscribes again to keep it. */
  presenceWatchTtlMs: number;
  loginTimeoutMs: number;
  pingIntervalMs: number;
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
  /** Estimated bytes of large groups' membership kept (src/gateway/groups.ts). @default 256 MiB */
  groupIndexMaxBytes?: number;
}

export type LoginPolicy = 'multi' | 'platform' | 'single';

export interface GatewayDeps {
  bus: Bus;
  sessions: Sessions;
  registry: Registry;
  tokens: TokenService;
  /** Where this gateway says which users its connections watch (presence changes come only to watching gateways). @default not said: logic sends every change to every gateway */
  watches?: Watches;
  /** Counters for /metrics. @default none */
  metrics?: GatewayMetrics;
}

// What every role builds the same way from the configuration: the gateway's
// and logic's options, and the distributed engines.
import { ConfigError, DEFAULTS, type ServerConfig } from '../config.js';
import type { GatewayOptions } from '../gateway/gateway.js';
import type { LogicOptions } from '../logic/logic.js';
import { RedisBus } from '../engines/bus-redis.js';
import { RedisSessions } from '../engines/sessions-redis.js';
import { RedisRegistry } from '../engines/registry-redis.js';
import { RedisWatches } from '../engines/watches-redis.js';

export function gatewayOptions(config: ServerConfig): GatewayOptions {
  return {
    nodeId: config.nodeId,
    // Who may be watched is checked again only under 'contacts' (a contact can end); 'all' watches never lapse.
    presenceWatchTtlMs: config.presenceVisibility === 'contacts' ? DEFAULTS.presenceWatchTtlMs : Infinity,
    loginTimeoutMs: config.loginTimeoutMs,
    pingIntervalMs: config.pingIntervalMs,
    maxFrameBytes: config.limits.maxFrameBytes,
    maxTextBytes: config.limits.maxTextBytes,
    maxPayloadBytes: config.limits.maxPayloadBytes,
    maxFileBytes: config.files.maxBytes,
    ratePerSecond: config.limits.ratePerSecond,
    rateBurst: config.limits.rateBurst,
    maxOutboundBytes: config.limits.maxOutboundBytes,
    loginPolicy: config.loginPolicy,
    nodeTtlMs: config.nodeTtlMs,
    userMessagesPerSecond: config.limits.userMessagesPerSecond,
    maxConnectionsPerUser: config.limits.maxConnectionsPerUser,
    loginAttemptsPerMinute: config.limits.loginAttemptsPerMinute,
    maxLoginFrameBytes: config.limits.maxLoginFrameBytes,
    maxConnectionsPerAddress: config.limits.maxConnectionsPerAddress,
    maxPendingLogins: config.limits.maxPendingLogins,
    trustedProxies: config.trustedProxies,
    hostNames: [config.host, config.publicHost],
    allowedOrigins: config.allowedOrigins,
  };
}

export function logicOptions(config: ServerConfig): LogicOptions {
  return {
    nodeId: config.nodeId,
    dc: config.dc,
    maxTextBytes: config.limits.maxTextBytes,
    maxPayloadBytes: config.limits.maxPayloadBytes,
    maxGroupMembers: config.limits.maxGroupMembers,
    maxGroupsPerUser: config.limits.maxGroupsPerUser,
    groupAddPolicy: config.groupAddPolicy,
    recallWindowMs: config.recallWindowMs,
    routing: config.routing,
    presenceVisibility: config.presenceVisibility,
    tuning: DEFAULTS.logic,
    search: config.search,
  };
}

/** Bus, sessions, registry and presence watches on the cluster's Redis. */
export function redisEngines(config: ServerConfig, role: string): { bus: RedisBus; sessions: RedisSessions; registry: RedisRegistry; watches: RedisWatches } {
  const url = requireUrl(config.redisUrl, `longlink ${role} needs LONGLINK_REDIS_URL (or --redis-url), or LONGLINK_REDIS_CLUSTER for a Redis Cluster`);
  const prefix = config.redisPrefix;
  return {
    bus: new RedisBus({
      url, prefix, nodeId: config.nodeId, shards: config.busShards, leaseMs: config.leaseMs,
      maxUpLength: config.busUpMaxLength, maxDownLength: config.busDownMaxLength,
      maxUpAgeMs: config.busUpMaxAgeMs, maxDownAgeMs: config.busDownMaxAgeMs,
      maxUpBytes: config.busUpMaxBytes, maxDownBytes: config.busDownMaxBytes, replicas: config.redisReplicas,
    }),
    sessions: new RedisSessions({ url, prefix }),
    registry: new RedisRegistry({ url, prefix }),
    watches: new RedisWatches({ url, prefix }),
  };
}

export function requireUrl(url: string | undefined, message: string): string {
  if (!url) throw new ConfigError(message);
  return url;
}

// Logging a user (every device) or one device out everywhere: tokens issued
// until now stop working at login on every gateway, and the connections open
// now are kicked with TOKEN_REVOKED (no reconnect: the client needs a new
// token). The revocation is written before the sessions are looked up, and a
// gateway checks it after binding a session (gateway.ts login), so a login
// racing the revocation is either refused or found here and kicked.
import type { Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import { ErrorCode } from '../protocol/index.js';

/** Longest token lifetime the API issues: a revocation older than this has nothing left to refuse. */
export const MAX_TOKEN_TTL_MS = 90 * 86400 * 1000;

export interface RevokeResult {
  /** Tokens issued at or before this time (ms since the epoch) are refused. */
  revokedBeforeMs: number;
  /** Connections told to close. */
  kicked: number;
}

export async function revokeTokens(
  deps: { sessions: Sessions; bus: Bus },
  userId: string,
  deviceId?: string,
): Promise<RevokeResult> {
  const revokedBeforeMs = Date.now();
  await deps.sessions.revoke(userId, deviceId, revokedBeforeMs, MAX_TOKEN_TTL_MS);
  const online = (await deps.sessions.lookup([userId])).get(userId) ?? [];
  const targets = online.filter((s) => deviceId === undefined || s.deviceId === deviceId);
  const reason = deviceId === undefined ? 'logged out everywhere by an administrator' : `device ${deviceId} logged out by an administrator`;
  await Promise.all(targets.map((s) => deps.bus.publishDown(s.node, {
    kind: 'kick', userId: s.userId, deviceId: s.deviceId, connId: s.connId, code: ErrorCode.TOKEN_REVOKED, reason,
  })));
  return { revokedBeforeMs, kicked: targets.length };
}

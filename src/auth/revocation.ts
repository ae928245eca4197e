// Logging a user (every device) or one device out everywhere: tokens issued
// until now stop working at login on every gateway, and the connections open
// now with such a token are kicked with TOKEN_REVOKED (no reconnect: the
// client needs a new token). The revocation is written first, then announced
// to every gateway, which kicks its matching connections by their token's
// issue time (a connection that logged in with a newer token stays), and also
// marks those still logging in; a login checks the revocations before and
// after binding its session (gateway.ts login), so none slips between. With
// several datacenters, the others apply it too (their sync services copy it).
import { ALL_GATEWAYS, down, type Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { DatacenterStore } from '../engines/store.js';

/** Longest token lifetime the API issues: a revocation older than this has nothing left to refuse. */
export const MAX_TOKEN_TTL_MS = 90 * 86400 * 1000;

export interface RevokeResult {
  /** Tokens issued at or before this time (ms since the epoch) are refused. */
  revokedBeforeMs: number;
}

export async function revokeTokens(
  deps: { sessions: Sessions; bus: Bus; store?: Pick<DatacenterStore, 'putRevocation'> },
  userId: string,
  deviceId?: string,
): Promise<RevokeResult> {
  const revokedBeforeMs = Date.now();
  await deps.sessions.revoke(userId, deviceId, revokedBeforeMs, MAX_TOKEN_TTL_MS);
  await deps.bus.publishDown(ALL_GATEWAYS, down({ case: 'revoke', value: { userId, deviceId: deviceId ?? '', beforeMs: BigInt(revokedBeforeMs) } }));
  // Then kept in the store: the other datacenters' sync services copy it from there (src/dc/marks.ts). In force here
  // already; if this write fails the request fails, and a retry revokes again (later, so covering as much).
  await deps.store?.putRevocation(userId, deviceId ?? '', revokedBeforeMs);
  return { revokedBeforeMs };
}

// Send one encoded frame to every online device of some users: the sessions
// say which gateway holds which user; each gateway gets one message.
import { ALL_GATEWAYS, type Bus, type DeliverTarget } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';

/**
 * How pushes find their gateways: `targeted` looks recipients up in the
 * session registry and writes to each holding gateway's own stream (the 10M
 * design); `broadcast` writes once to a stream every gateway reads, and each
 * keeps what it holds (the 1M design: no lookup, more reads).
 */
export type Routing = 'targeted' | 'broadcast';

export async function deliverToUsers(
  deps: { bus: Bus; sessions: Sessions; routing?: Routing },
  userIds: readonly string[],
  frame: Uint8Array,
  except?: { userId: string; deviceId: string },
): Promise<void> {
  if (userIds.length === 0) return;
  if (deps.routing === 'broadcast') {
    const targets = userIds.map((userId) => (except && except.userId === userId ? { userId, exceptDevice: except.deviceId } : { userId }));
    await deps.bus.publishDown(ALL_GATEWAYS, { kind: 'deliver', targets, frame });
    return;
  }
  const online = await deps.sessions.lookup(userIds);
  const byNode = new Map<string, DeliverTarget[]>();
  for (const [userId, sessions] of online) {
    for (const node of new Set(sessions.map((s) => s.node))) {
      let targets = byNode.get(node);
      if (!targets) {
        targets = [];
        byNode.set(node, targets);
      }
      targets.push(except && except.userId === userId ? { userId, exceptDevice: except.deviceId } : { userId });
    }
  }
  for (const [node, targets] of byNode) await deps.bus.publishDown(node, { kind: 'deliver', targets, frame });
}

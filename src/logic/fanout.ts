// Send one encoded frame to every online device of some users: the sessions
// say which gateway holds which user; each gateway gets one message.
import type { Bus, DeliverTarget } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';

export async function deliverToUsers(
  deps: { bus: Bus; sessions: Sessions },
  userIds: readonly string[],
  frame: Uint8Array,
  except?: { userId: string; deviceId: string },
): Promise<void> {
  if (userIds.length === 0) return;
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

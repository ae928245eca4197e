// Send one encoded frame to every online device of some users: the sessions
// say which gateway holds which user; each gateway gets one message.
import { create } from '@bufbuild/protobuf';
import { ALL_GATEWAYS, down, type Bus } from '../engines/bus.js';
import { DeliverTargetSchema, type DeliverTarget } from '../protocol/gen/longlink/internal/v1/envelope_pb.js';
import type { Sessions } from '../engines/sessions.js';

/**
 * How pushes find their gateways: `targeted` looks recipients up in the
 * session registry and writes to each holding gateway's own stream (the 10M
 * design); `broadcast` writes once to a stream every gateway reads, and each
 * keeps what it holds (the 1M design: no lookup, more reads).
 */
export type Routing = 'targeted' | 'broadcast';

export interface Delivery {
  userIds: readonly string[];
  frame: Uint8Array;
  /** Skip this device of this user (the sender's own device). */
  except?: { userId: string; deviceId: string };
}

function target(userId: string, except?: { userId: string; deviceId: string }): DeliverTarget {
  return create(DeliverTargetSchema, except && except.userId === userId ? { userId, exceptDevice: except.deviceId } : { userId });
}

/**
 * Send each delivery's frame to every online device of its users, in order.
 * Targeted routing looks every user of the whole list up once. Publishes are
 * issued together, not one round trip after another: the bus keeps the order
 * of calls per gateway.
 */
export async function deliver(deps: { bus: Bus; sessions: Sessions; routing?: Routing }, deliveries: readonly Delivery[]): Promise<void> {
  const published: Promise<void>[] = [];
  if (deps.routing === 'broadcast') {
    for (const d of deliveries) {
      if (d.userIds.length === 0) continue;
      published.push(deps.bus.publishDown(ALL_GATEWAYS, down({ case: 'deliver', value: { targets: d.userIds.map((u) => target(u, d.except)), frame: d.frame } })));
    }
    await Promise.all(published);
    return;
  }
  const users = new Set<string>();
  for (const d of deliveries) for (const u of d.userIds) users.add(u);
  if (users.size === 0) return;
  const online = await deps.sessions.lookup([...users]);
  if (online.size === 0) return;
  for (const d of deliveries) {
    const byNode = new Map<string, DeliverTarget[]>();
    for (const userId of d.userIds) {
      const sessions = online.get(userId);
      if (!sessions) continue;
      const except = d.except && d.except.userId === userId ? d.except.deviceId : undefined;
      // A gateway that holds only the device this skips gets nothing.
      for (const node of new Set(sessions.filter((s) => s.deviceId !== except).map((s) => s.node))) {
        let targets = byNode.get(node);
        if (!targets) {
          targets = [];
          byNode.set(node, targets);
        }
        targets.push(target(userId, d.except));
      }
    }
    for (const [node, targets] of byNode) published.push(deps.bus.publishDown(node, down({ case: 'deliver', value: { targets, frame: d.frame } })));
  }
  await Promise.all(published);
}

/** One frame to every online device of some users. */
export function deliverToUsers(
  deps: { bus: Bus; sessions: Sessions; routing?: Routing },
  userIds: readonly string[],
  frame: Uint8Array,
  except?: { userId: string; deviceId: string },
): Promise<void> {
  return deliver(deps, [{ userIds, frame, except }]);
}

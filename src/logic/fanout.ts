// Send one encoded frame to every online device of some users: the sessions
// say which gateway holds which user; each gateway gets one message.
//
// Large groups (more than CHANGE_FANOUT_MAX members once: Store.largeGroups)
// go another way, so a message costs what the gateways cost, not what the
// members do: one GroupDeliver per live gateway (broadcast routing: one for
// all of them), carrying the frame, the conversation and seq, and what the
// message changes in the membership, with no list of recipients. Each
// gateway keeps the group's membership windows (src/gateway/groups.ts),
// loaded once through the bus (GroupMembersRequest, answered by
// src/logic/member-loads.ts) and kept current by the group's own timeline
// events, which come this way in seq order like its messages; it delivers
// to its own connections of the users who may see each seq.
import { create } from '@bufbuild/protobuf';
import { ALL_GATEWAYS, GROUP_DELIVER, down, type Bus } from '../engines/bus.js';
import { DeliverTargetSchema, type DeliverTarget } from '../protocol/gen/longlink/internal/v1/envelope_pb.js';
import type { Sessions } from '../engines/sessions.js';
import type { Registry } from '../engines/registry.js';
import type { ChatMessage } from '../protocol/index.js';

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

/** One message of a large group, for every gateway. */
export interface GroupDelivery {
  message: ChatMessage;
  frame: Uint8Array;
}

/** What a timeline event does to the membership at its seq (src/gateway/groups.ts applies it). */
export function membershipChange(m: ChatMessage): { joined: string[]; left: string[]; ended: boolean } {
  const e = m.event;
  switch (e?.type) {
    case 'group_created': {
      // The creator (its owner) joins with the members it named, at the event.
      const owner = e.actor || m.fromUser;
      return { joined: [owner, ...(e.userIds ?? []).filter((u) => u !== owner)], left: [], ended: false };
    }
    case 'members_added':
      return { joined: [...(e.userIds ?? [])], left: [], ended: false };
    case 'members_removed':
    case 'member_left':
      return { joined: [], left: [...(e.userIds ?? [])], ended: false };
    case 'dismissed':
      return { joined: [], left: [], ended: true };
    default:
      return { joined: [], left: [], ended: false };
  }
}

/**
 * The gateways a large group's messages go to, or undefined when one of the
 * live gateways does not take GroupDeliver (an older version, during a
 * rolling upgrade): then they go per member, the way of small groups.
 * Broadcast routing: the stream every gateway reads.
 */
export async function groupDeliverNodes(deps: { registry?: Registry; routing?: Routing }): Promise<string[] | undefined> {
  if (!deps.registry) return [ALL_GATEWAYS];
  const live = await deps.registry.live('gateway');
  if (live.some((n) => !n.services?.includes(GROUP_DELIVER))) return undefined;
  return deps.routing === 'broadcast' ? [ALL_GATEWAYS] : live.map((n) => n.id);
}

/** Large groups' messages, in order: each to every gateway of `nodes` (groupDeliverNodes). A plain message skips the device that sent it. */
export async function deliverToGateways(deps: { bus: Bus }, nodes: readonly string[], deliveries: readonly GroupDelivery[]): Promise<void> {
  if (deliveries.length === 0) return;
  const published: Promise<void>[] = [];
  for (const { message: m, frame } of deliveries) {
    const change = membershipChange(m);
    const value = {
      conversationId: m.conversationId, seq: BigInt(m.seq), frame,
      exceptUser: m.event ? '' : m.fromUser, exceptDevice: m.event ? '' : m.fromDevice,
      joined: change.joined, left: change.left, ended: change.ended,
    };
    for (const node of nodes) published.push(deps.bus.publishDown(node, down({ case: 'groupDeliver', value })));
  }
  await Promise.all(published);
}

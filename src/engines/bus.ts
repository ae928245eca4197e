// Bus: how gateways and logic nodes meet. Uplink carries client requests from
// a gateway to logic; downlink carries replies and pushes from logic to the
// gateway(s) holding the connections.
//
// Contract (checked by test/engines/bus.contract.ts for every implementation):
// - Uplink messages with the same partition key are handed to the consumer in
//   publish order, one batch at a time: the next batch of a partition is not
//   delivered before the handler's promise for the previous one settles. This
//   is what makes seq assignment single-writer per conversation.
// - A message is delivered at least once; the handler is idempotent.
// - Downlink messages to one node arrive in publish order.
// - A distributed bus runs the uplink handler under a write fence (store.ts)
//   naming the shards of the batch, so a node that lost a shard while it held
//   a batch cannot write it; the refused batch is left to the shard's owner.
import type { Frame } from '../protocol/index.js';

/** Who sent an uplink request: the connection and its authenticated identity. */
export interface Origin {
  node: string;
  connId: number;
  userId: string;
  deviceId: string;
  platform: string;
}

/**
 * A client frame forwarded by a gateway, already authenticated — or, when
 * `session` is set, news that the origin's session came online or went
 * offline (then `frame` is empty). Logic turns those into presence events.
 */
export interface UpMessage {
  origin: Origin;
  frame: Frame;
  session?: 'online' | 'offline';
}

/** A frame for one connection (a reply to its request). */
export interface ReplyDown {
  kind: 'reply';
  connId: number;
  /** Encoded Frame bytes. */
  frame: Uint8Array;
}

/** A frame for every local device of some users (a push). */
export interface DeliverDown {
  kind: 'deliver';
  targets: DeliverTarget[];
  /** Encoded Frame bytes, shared by every connection that gets them. */
  frame: Uint8Array;
}

export interface DeliverTarget {
  userId: string;
  /** Skip this device of the user (the sender's own device). */
  exceptDevice?: string;
}

/** Close one device's connection with a Kick (e.g. it logged in elsewhere). */
export interface KickDown {
  kind: 'kick';
  userId: string;
  deviceId: string;
  /** Kick only this connection; when absent, whichever holds the device. */
  connId?: number;
  code: number;
  reason: string;
  /** Tell the client to reconnect (its session was lost, not taken over). @default false */
  reconnect?: boolean;
}

/** Set the users one connection watches for presence (replaces its list). */
export interface WatchDown {
  kind: 'watch';
  connId: number;
  userIds: string[];
}

/** A presence change of one user, for every local connection watching them. */
export interface PresenceDown {
  kind: 'presence';
  userId: string;
  frame: Uint8Array;
}

/** A frame for every open connection of the node (system announcement). */
export interface BroadcastDown {
  kind: 'broadcast';
  frame: Uint8Array;
}

/**
 * Tokens of a user (every device, or one) issued at or before `beforeMs` were
 * revoked: every gateway kicks the matching connections (TOKEN_REVOKED).
 */
export interface RevokeDown {
  kind: 'revoke';
  userId: string;
  deviceId?: string;
  beforeMs: number;
}

export type DownMessage = ReplyDown | DeliverDown | KickDown | WatchDown | PresenceDown | BroadcastDown | RevokeDown;

/** publishDown target meaning "every gateway" (broadcast routing). */
export const ALL_GATEWAYS = '*';

export type UpHandler = (batch: UpMessage[]) => Promise<void>;
export type DownHandler = (batch: DownMessage[]) => void;

export interface ConsumeUpOptions {
  onTakeover?: () => void;
}

export interface Subscription {
  close(): Promise<void>;
}

/** What one process's bus has moved since it was made (for metrics and the benchmarks). */
export interface BusCounters {
  upPublished: number;
  /** Uplink entries handed to this process's consumer. */
  upRead: number;
  /** Downlink entries written (RedisBus: one entry carries what one turn published for a gateway). */
  downPublished: number;
  /** Downlink entries this process read (broadcast routing: every gateway reads every entry). */
  downRead: number;
  /** Downlink messages in the entries this process read (one entry may carry several). */
  downMessagesRead: number;
  /** Uplink batches the store refused because this node had lost their shard (a distributed bus; see store.ts, fencing). */
  fenced: number;
}

export function newBusCounters(): BusCounters {
  return { upPublished: 0, upRead: 0, downPublished: 0, downRead: 0, downMessagesRead: 0, fenced: 0 };
}

export interface Bus {
  readonly counters: BusCounters;
  /** Queue a client request for logic. Resolves once the bus has accepted it. */
  publishUp(partitionKey: string, message: UpMessage): Promise<void>;
  /**
   * Consume uplink as a logic node. `onTakeover` is called when this consumer
   * starts owning partitions another consumer may have served meanwhile, so
   * per-partition caches must be dropped (a distributed bus; never in-process).
   */
  consumeUp(handler: UpHandler, options?: ConsumeUpOptions): Subscription;
  /** Send to the gateway node `node`. */
  publishDown(node: string, message: DownMessage): Promise<void>;
  /** Receive what logic sends to gateway node `node`. */
  consumeDown(node: string, handler: DownHandler): Subscription;
  close(): Promise<void>;
}

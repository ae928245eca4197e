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
// - When the handler fails because the store is unavailable (isUnavailable,
//   store.ts), the bus waits and hands the same batch again, without counting
//   it as a failed attempt: an outage pauses consumption, it loses nothing.
// - When it fails otherwise, the bus hands the batch's entries again one at a
//   time (in order), so one bad entry is found alone; an entry that fails
//   `maxDeliveries` times goes to the dead letters with its error, and the
//   entries after it go on. Dead letters can be listed and replayed (once,
//   at the end of their original partition).
// - Downlink messages to one node arrive in publish order.
// - A distributed bus runs the uplink handler under a write fence (store.ts)
//   naming the shards of the batch, so a node that lost a shard while it held
//   a batch cannot write it; the refused batch is left to the shard's owner.
//
// Services. Each uplink request belongs to the service its operation names
// (src/protocol/operations.ts; session events to `presence`): a distributed
// bus keeps each service's requests on streams of their own, with their own
// shard leases, so a process consumes only the services it runs and each
// service scales and fails alone. An in-process bus has one consumer for all.
//
// Committed stream: every message the store committed, partitioned by its
// conversation, read by any number of consumer groups (push: fan-out to the
// gateways; risk; later sync between datacenters, a search indexer). Each
// group has its own offsets: it reads everything, at its own pace.
// - A group's handler is given each committed message once: a message
//   committed again (a redelivered send finds it stored, and publishes it
//   again) is dropped by a window of recently handled (conversation, seq).
// - Delivery is at least once: a consumer that dies after its handler and
//   before the ack has the batch handed again to the next owner. What a
//   handler returns as `counters` is added in the same step as the ack
//   (atomically on Redis), so counts kept that way are exact.
// - Within a conversation, messages come in the order they were published.
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import {
  CommittedSchema, DownSchema, UpEnvelopeSchema, type Committed, type Down, type UpEnvelope,
} from '../protocol/gen/longlink/internal/v1/envelope_pb.js';
import { operationOf, type Service } from '../protocol/operations.js';

export type {
  Committed, Down, GroupDeliver, GroupMembers, GroupMembersRequest, MemberWindow as WireMemberWindow, Origin, UpEnvelope,
} from '../protocol/gen/longlink/internal/v1/envelope_pb.js';
export type { Service } from '../protocol/operations.js';

/** Every service of the uplink, in the order a combined logic node starts them. */
export const UP_SERVICES: readonly Service[] = ['message', 'presence', 'group', 'storage'];

/**
 * The service an uplink request belongs to: its operation's, `presence` for a
 * session event, `storage` for a batch of PushAcks, `message` for a
 * gateway's member load (the service that fans out answers it) and for what
 * no row names.
 */
export function serviceOfUp(up: UpEnvelope): Service {
  if (up.body.case === 'session') return 'presence';
  if (up.body.case === 'acks') return 'storage';
  if (up.body.case === 'frame') return operationOf(up.body.value)?.service ?? 'message';
  return 'message';
}

/**
 * What a gateway lists among its registry entry's services when it takes
 * GroupDeliver (keeps large groups' membership): logic sends large groups'
 * messages that way only while every live gateway does (a rolling upgrade).
 */
export const GROUP_DELIVER = 'group-deliver';

/** Buckets of users a gateway's gathered PushAcks go up in: one uplink entry per bucket with acks at each flush. */
export const ACK_BUCKETS = 32;

/** The partition of a user's gathered PushAcks (by user, as a single PushAck: a user's acks stay in order). */
export function ackPartition(userId: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) {
    h ^= userId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return `acks:${(h >>> 0) % ACK_BUCKETS}`;
}

/** Builds a committed-stream entry. */
export function committed(init: MessageInitShape<typeof CommittedSchema>): Committed {
  return create(CommittedSchema, init);
}

/** The committed stream's consumer groups this codebase runs (any other name may be added). */
export const PUSH_GROUP = 'push';
export const RISK_GROUP = 'risk';
/** Full-text indexing (src/logic/search.ts). */
export const SEARCH_GROUP = 'search';
/** Offline push notifications (src/push/notifier.ts). */
export const NOTIFY_GROUP = 'notify';

/** What a committed-stream handler asks to be recorded with its ack. */
export interface CommittedEffects {
  /** Added to the group's counters in the same step as the ack (see Bus.committedCounters). */
  counters?: Record<string, number>;
}

export type CommittedHandler = (batch: Committed[]) => Promise<CommittedEffects | void>;

/**
 * The committed messages handled lately by one consumer group in this
 * process, by (conversation, seq): a message committed again is dropped.
 */
export class SeenWindow {
  private readonly keys = new Set<string>();
  private readonly order: string[] = [];
  private head = 0;

  constructor(private readonly size = 100_000) {}

  static key(c: Committed): string {
    return `${c.message?.conversationId ?? ''}\u0000${c.message?.seq ?? 0n}`;
  }

  /** The entries of `batch` not seen yet (and not repeated within it). */
  unseen(batch: readonly Committed[]): Committed[] {
    const fresh: Committed[] = [];
    const inBatch = new Set<string>();
    for (const c of batch) {
      const k = SeenWindow.key(c);
      if (this.keys.has(k) || inBatch.has(k)) continue;
      inBatch.add(k);
      fresh.push(c);
    }
    return fresh;
  }

  /** Remember handled entries (after their ack). */
  add(batch: readonly Committed[]): void {
    for (const c of batch) {
      const k = SeenWindow.key(c);
      if (this.keys.has(k)) continue;
      this.keys.add(k);
      this.order.push(k);
    }
    while (this.order.length - this.head > this.size) this.keys.delete(this.order[this.head++]!);
    if (this.head > 4096 && this.head * 2 > this.order.length) {
      this.order.splice(0, this.head);
      this.head = 0;
    }
  }
}

/** A downlink message as written by hand: `{ case: 'reply', value: { connId, frame } }`. */
export type DownInit = MessageInitShape<typeof DownSchema>['kind'];

/** Builds a downlink message. */
export function down(kind: DownInit): Down {
  return create(DownSchema, { kind });
}

/** Builds an uplink envelope. */
export function upEnvelope(init: MessageInitShape<typeof UpEnvelopeSchema>): UpEnvelope {
  return create(UpEnvelopeSchema, init);
}

/** publishDown target meaning "every gateway" (broadcast routing). */
export const ALL_GATEWAYS = '*';

export type UpHandler = (batch: UpEnvelope[]) => Promise<void>;
export type DownHandler = (batch: Down[]) => void;

export interface ConsumeUpOptions {
  onTakeover?: () => void;
  /** The services whose requests this consumer takes. @default UP_SERVICES (all) */
  services?: readonly Service[];
}

export interface ConsumeDownOptions {
  /** Also read what is published to every gateway (ALL_GATEWAYS). @default true */
  broadcast?: boolean;
  /**
   * Called when entries published to this node were trimmed from its stream
   * before it read them (a distributed bus: the stream's age or byte bound;
   * see faults/README.md, "Stream bounds"): `entries` were lost, so the
   * pushes and replies they held never arrive (clients heal by timeout, gap
   * and sync). Never called by an in-process bus.
   */
  onTrimmed?: (entries: number) => void;
}

/** An uplink entry set aside after failing repeatedly (see DeadLetters). */
export interface DeadLetterInfo {
  /** Its id in the dead-letter list. */
  id: string;
  /** Where it was read (stream or queue) and its id there. */
  stream: string;
  entryId: string;
  /** The partition it belongs to ('' when it did not decode). */
  partition: string;
  /** The operation it carried (e.g. `send`, `group.create`), or '' when it did not decode. */
  operation: string;
  userId: string;
  error: string;
  failedAtMs: number;
  attempts: number;
}

/**
 * Dead letters: entries whose handling kept failing for a reason of their own
 * (not the store being unavailable, which pauses consumption instead), set
 * aside alone, with their error, so the entries after them go on.
 */
export interface DeadLetters {
  /** The oldest `limit` dead letters. */
  list(limit: number): Promise<DeadLetterInfo[]>;
  /** How many there are. */
  count(): Promise<number>;
  /**
   * Put dead letters back at the end of their original partition, each once
   * (a concurrent replay of the same id does nothing). All of them when `ids`
   * is empty. Returns the ids replayed.
   */
  replay(ids: readonly string[]): Promise<string[]>;
}

export interface Subscription {
  close(): Promise<void>;
}

/** What one process's bus has moved since it was made (for metrics and the benchmarks). */
export interface BusCounters {
  upPublished: number;
  /** Uplink entries handed to this process's consumer. */
  upRead: number;
  /** Downlink entries written (RedisBus: one entry carries what one turn published for a gateway, split at ~64 KiB). */
  downPublished: number;
  /** Downlink entries this process read (broadcast routing: every gateway reads every entry). */
  downRead: number;
  /** Downlink messages in the entries this process read (one entry may carry several). */
  downMessagesRead: number;
  /** Uplink batches the store refused because this node had lost their shard (a distributed bus; see store.ts, fencing). */
  fenced: number;
  /** Committed-stream entries this process published. */
  committedPublished: number;
  /** Committed-stream entries handed to this process's consumer groups (after dropping repeats). */
  committedRead: number;
  /** Committed messages dropped because their group had handled them already (committed twice). */
  committedRepeats: number;
  /** Committed-stream entries a group's handler kept failing on, skipped (logged). */
  committedSkipped: number;
  /** Uplink entries this process moved to the dead letters. */
  deadLettered: number;
  /** Downlink messages of a kind this process does not know (a newer publisher), skipped. */
  unknownSkipped: number;
  /**
   * Uplink entries trimmed (by the stream's age, byte or length bound) before
   * logic acked them, seen by this process (a distributed bus). Never acked,
   * so their senders resend them.
   */
  upTrimmedUnprocessed: number;
  /** Downlink entries trimmed from a stream this process reads before it read them (a distributed bus). */
  downTrimmedUnread: number;
}

export function newBusCounters(): BusCounters {
  return {
    upPublished: 0, upRead: 0, downPublished: 0, downRead: 0, downMessagesRead: 0, fenced: 0, deadLettered: 0, unknownSkipped: 0,
    committedPublished: 0, committedRead: 0, committedRepeats: 0, committedSkipped: 0,
    upTrimmedUnprocessed: 0, downTrimmedUnread: 0,
  };
}

/** The shards of a distributed bus, for `longlink admin shards` (RedisBus; the in-process bus has none). */
export interface ShardAdmin {
  /** The count now, the count before the last growth, and how many growths there were. */
  shardMap(): { count: number; previous: number; epoch: number };
  /** Per topic (each uplink service, each committed-stream group): every shard's owner, lag and state. */
  shardStatus(): Promise<{ topic: string; shards: { shard: number; owner: string | undefined; lag: number; state: 'ready' | 'waiting' }[] }[]>;
  /** Grow the count on the live cluster to a multiple of the current one. */
  growShards(count: number): Promise<{ count: number; previous: number; epoch: number }>;
}

export interface Bus {
  readonly counters: BusCounters;
  readonly dead: DeadLetters;
  /** Present on a distributed bus. */
  readonly shards?: ShardAdmin;
  /** Queue a request for logic, in the partition it names. Resolves once the bus has accepted it. */
  publishUp(message: UpEnvelope): Promise<void>;
  /**
   * Consume uplink as a logic node. `onTakeover` is called when this consumer
   * starts owning partitions another consumer may have served meanwhile, so
   * per-partition caches must be dropped (a distributed bus; never in-process).
   */
  consumeUp(handler: UpHandler, options?: ConsumeUpOptions): Subscription;
  /** Append committed messages to the committed stream (each in its conversation's partition, in this order). */
  publishCommitted(entries: readonly Committed[]): Promise<void>;
  /**
   * Consume the committed stream as one member of consumer group `group`
   * (the group's partitions are shared among its live members).
   */
  consumeCommitted(group: string, handler: CommittedHandler): Subscription;
  /** The counters a group's handlers recorded with their acks (CommittedEffects). */
  committedCounters(group: string): Promise<Map<string, number>>;
  /**
   * Entries not yet handled, per consumer group: each uplink service's and
   * each committed-stream group's (read but not acked, plus not read yet).
   */
  consumerLag(): Promise<Map<string, number>>;
  /**
   * True only when no process serves `service` as far as the bus knows (a
   * distributed bus: its live set has had no member past the lease, read at
   * most a second ago). The gateway then refuses the service's requests
   * UNAVAILABLE at once rather than queue them for nobody; while a process
   * of it is live or just died, they wait in its streams. Never blocks.
   */
  isDown(service: Service): boolean;
  /**
   * Resolves once isDown(service) answers from a look at the live set made
   * at most 250 ms ago (a process of it may have come back since the last
   * background look): a request about to be refused waits for one round trip
   * instead. Looks are shared, so a flood of such requests costs Redis at
   * most four looks a second per process.
   */
  recheck(service: Service): Promise<void>;
  /**
   * Requests of different services are consumed apart (each service on
   * streams of its own), so a connection's order across services is kept by
   * the gateway (src/gateway/order.ts). False for one consumer of everything.
   */
  readonly splitsServices: boolean;
  /**
   * A publish can fail after a later one succeeded (on a Redis Cluster, a
   * write waiting for its replica when the master dies, while the next one
   * goes to the promoted replica): the gateway then publishes a connection's
   * requests of one partition one at a time, and refuses those queued behind
   * one that failed (the client sends them again, in order).
   */
  readonly publishInTurn?: boolean;
  /** Send to the gateway node `node`. */
  publishDown(node: string, message: Down): Promise<void>;
  /** Receive what logic sends to node `node` (a gateway, or an API node awaiting replies). */
  consumeDown(node: string, handler: DownHandler, options?: ConsumeDownOptions): Subscription;
  close(): Promise<void>;
}

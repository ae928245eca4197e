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
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import {
  DownSchema, UpEnvelopeSchema, type Down, type UpEnvelope,
} from '../protocol/gen/longlink/internal/v1/envelope_pb.js';

export type { Down, Origin, UpEnvelope } from '../protocol/gen/longlink/internal/v1/envelope_pb.js';

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
    upTrimmedUnprocessed: 0, downTrimmedUnread: 0,
  };
}

export interface Bus {
  readonly counters: BusCounters;
  readonly dead: DeadLetters;
  /** Queue a request for logic, in the partition it names. Resolves once the bus has accepted it. */
  publishUp(message: UpEnvelope): Promise<void>;
  /**
   * Consume uplink as a logic node. `onTakeover` is called when this consumer
   * starts owning partitions another consumer may have served meanwhile, so
   * per-partition caches must be dropped (a distributed bus; never in-process).
   */
  consumeUp(handler: UpHandler, options?: ConsumeUpOptions): Subscription;
  /** Send to the gateway node `node`. */
  publishDown(node: string, message: Down): Promise<void>;
  /** Receive what logic sends to node `node` (a gateway, or an API node awaiting replies). */
  consumeDown(node: string, handler: DownHandler, options?: ConsumeDownOptions): Subscription;
  close(): Promise<void>;
}

// How logic runs one uplink batch: every write of a partition in arrival
// order, reads beside them.
//
// A batch holds requests of many partitions (conversations, groups, users).
// Within a partition, writes are applied in the order they arrived, whatever
// their kind: a membership change is a barrier for the sends after it (they
// are checked and stored after it), and the sends before it are stored
// before it. Across partitions nothing is ordered, so the batch runs in
// rounds: each round stores the sends at the head of every partition in one
// transaction (the group commit that makes 1:1 traffic cheap), then applies
// the next non-send write of every partition (different partitions side by
// side). A batch of sends only is one round, one transaction.
//
// Reads (sync, history, lists, presence) change nothing: each is handed on
// (to the read queue, read-queue.ts) once the writes its connection sent
// before it are applied, so a connection sees its own writes; the batch does
// not wait for them, so a costly read never holds the writes of others.

/** One request of a batch, as the scheduler sees it. */
export interface Scheduled<T> {
  item: T;
  partition: string;
  /** `send`: stored with the other sends of its round; `write`: alone, in order; `read`: beside the writes. */
  kind: 'send' | 'write' | 'read';
  /** Its connection (node/conn): a read waits for the requests its connection sent before it. */
  connection: string;
}

export interface ScheduleHooks<T> {
  /** Store (and answer) sends of several partitions, in one transaction. */
  sends(items: T[]): Promise<void>;
  /** Apply one write. */
  write(item: T): Promise<void>;
  /** Hand one read on (it is answered later, outside the batch); never throws. */
  read(item: T): void;
}

/** Writes of different partitions applied at once within a round. */
const WRITES_AT_ONCE = 16;

/**
 * Run a batch. Resolves when every write was applied and every read handed
 * on; rejects with the first write failure (the batch is then handed again by the bus: every
 * write is idempotent, so what was applied is not applied twice).
 */
export async function runBatch<T>(batch: readonly Scheduled<T>[], hooks: ScheduleHooks<T>): Promise<void> {
  const done = new Map<Scheduled<T>, Deferred>();
  const lastWriteOfConnection = new Map<string, Promise<void>>();
  const queues = new Map<string, Scheduled<T>[]>();
  const reads: Promise<void>[] = [];
  for (const s of batch) {
    if (s.kind === 'read') {
      const before = lastWriteOfConnection.get(s.connection);
      if (before) reads.push(before.then(() => hooks.read(s.item)));
      else hooks.read(s.item);
      continue;
    }
    const d = deferred();
    done.set(s, d);
    lastWriteOfConnection.set(s.connection, d.promise);
    let q = queues.get(s.partition);
    if (!q) queues.set(s.partition, (q = []));
    q.push(s);
  }
  try {
    while (queues.size > 0) {
      const sends: Scheduled<T>[] = [];
      for (const q of queues.values()) while (q.length > 0 && q[0]!.kind === 'send') sends.push(q.shift()!);
      if (sends.length > 0) {
        await hooks.sends(sends.map((s) => s.item));
        for (const s of sends) done.get(s)!.resolve();
      }
      const writes: Scheduled<T>[] = [];
      for (const [partition, q] of queues) {
        if (q.length > 0 && q[0]!.kind === 'write') writes.push(q.shift()!);
        if (q.length === 0) queues.delete(partition);
      }
      const writeSlots = new Slots(WRITES_AT_ONCE);
      await Promise.all(writes.map((s) => writeSlots.run(async () => {
        await hooks.write(s.item);
        done.get(s)!.resolve();
      })));
      // A long batch gives the event loop a turn between rounds.
      if (queues.size > 0) await new Promise((r) => setImmediate(r));
    }
  } finally {
    // Reads waiting on a write that failed are handed on anyway (they change nothing).
    for (const d of done.values()) d.resolve();
    await Promise.all(reads);
  }
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** At most `size` tasks at once; the others wait their turn in order. */
export class Slots {
  private busy = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly size: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.busy >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.busy++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // the slot passes straight to the next task
      else this.busy--;
    }
  }
}

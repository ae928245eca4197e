// Reads (sync, history, conversation lists, presence, group info) scheduled
// fairly between users, outside the write path.
//
// A read changes nothing, so it need not hold its uplink batch: the batch is
// done once its writes are, and its reads wait here. Users take turns (round
// robin), one read of a user at a time, a bounded number of reads at once on
// the node; a user whose replies took more than its byte budget waits for it
// to refill while the others go on; a user with too many reads waiting gets
// BUSY for the next ones. Between two reads the queue yields to the event
// loop, so a store that answers synchronously (SQLite) never holds the
// process for more than one bounded read.
//
// A read still waiting when the node stops is dropped (its `drop` answers it,
// UNAVAILABLE: ask again); one lost with a node that dies was never answered,
// and the client's request times out. A read running past READ_DEADLINE_MS
// gives its slot back (it still answers when it ends), so a store call that
// hangs cannot stop every read of the node.

export interface ReadQueueOptions {
  /** Reads running at once. */
  atOnce: number;
  /** Reads of one user waiting; past it submit() refuses. */
  queuedPerUser: number;
  /** Reply bytes per second one user may take, sustained. */
  bytesPerSecond: number;
  /** Reply bytes one user may take at once above that rate. */
  bytesBurst: number;
}

/** What a read costs besides its reply's bytes (the store's work for even an empty answer). */
export const READ_BASE_COST = 8 * 1024;

/** Reads waiting on one node, all users together; past it submit() refuses. */
const MAX_WAITING = 10_000;

/** A read running this long gives its slot back. */
export const READ_DEADLINE_MS = 10_000;

/** A read: resolves with the bytes of its reply; never rejects (it answers its own errors). */
export type ReadTask = () => Promise<number>;

interface Waiting {
  task: ReadTask;
  /** Answer the read that will not run (the queue closed). */
  drop: () => void;
}

interface UserReads {
  waiting: Waiting[];
  running: boolean;
  /** Byte budget left (may go below 0: the user then waits until it is back above 0). */
  tokens: number;
  refilledAt: number;
}

export class ReadQueue {
  /** Users with reads waiting or running, in turn order (a user served goes to the back). */
  private readonly users = new Map<string, UserReads>();
  private running = 0;
  private waitingTotal = 0;
  private pumping = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Times a user's reads waited for its budget, reads that ran past the deadline: for /metrics (refusals are limit breaches there). */
  readonly counters = { throttled: 0, overran: 0 };

  constructor(private readonly options: ReadQueueOptions) {}

  /** Queue a read of `user`. False when the user (or the node) has too many waiting: answer BUSY. */
  submit(user: string, task: ReadTask, drop: () => void): boolean {
    if (this.closed) return false;
    let u = this.users.get(user);
    if ((u && u.waiting.length >= this.options.queuedPerUser) || this.waitingTotal >= MAX_WAITING) {
      return false;
    }
    if (!u) {
      u = { waiting: [], running: false, tokens: this.options.bytesBurst, refilledAt: Date.now() };
      this.users.set(user, u);
    }
    u.waiting.push({ task, drop });
    this.waitingTotal++;
    this.schedule();
    return true;
  }

  /** Reads waiting (for metrics and tests). */
  get waiting(): number {
    return this.waitingTotal;
  }

  /** Drop what waits (each answered by its `drop`); running reads finish. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const u of this.users.values()) for (const w of u.waiting) w.drop();
    this.users.clear();
    this.waitingTotal = 0;
  }

  /** Resolves once no read runs, or after `ms`. */
  async idle(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (this.running > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  }

  private schedule(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    setImmediate(() => {
      this.pumping = false;
      this.pump();
    });
  }

  /** Start reads while there are free slots and users whose turn it is. */
  private pump(): void {
    const now = Date.now();
    let soonest = Infinity;
    for (const [user, u] of this.users) {
      if (this.running >= this.options.atOnce) return;
      if (u.running) continue;
      this.refill(u, now);
      if (u.waiting.length === 0) {
        if (u.tokens >= this.options.bytesBurst) this.users.delete(user);
        continue;
      }
      if (u.tokens <= 0) {
        // Over its budget: its reads wait, the other users' do not.
        soonest = Math.min(soonest, (-u.tokens / this.options.bytesPerSecond) * 1000 + 1);
        continue;
      }
      const { task } = u.waiting.shift()!;
      this.waitingTotal--;
      // Its turn is taken: to the back of the line.
      this.users.delete(user);
      this.users.set(user, u);
      this.run(u, task);
    }
    if (soonest !== Infinity && this.timer === undefined) {
      this.counters.throttled++;
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.schedule();
      }, Math.ceil(soonest));
    }
  }

  private run(u: UserReads, task: ReadTask): void {
    u.running = true;
    this.running++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      clearTimeout(deadline);
      u.running = false;
      this.running--;
      // The next read after a turn of the event loop (sockets first).
      this.schedule();
    };
    const deadline = setTimeout(() => {
      this.counters.overran++;
      release();
    }, READ_DEADLINE_MS);
    void task().then(
      (bytes) => {
        u.tokens -= bytes + READ_BASE_COST;
      },
      () => {
        u.tokens -= READ_BASE_COST;
      },
    ).finally(release);
  }

  private refill(u: UserReads, now: number): void {
    const elapsed = now - u.refilledAt;
    if (elapsed <= 0) return;
    u.tokens = Math.min(this.options.bytesBurst, u.tokens + (elapsed * this.options.bytesPerSecond) / 1000);
    u.refilledAt = now;
  }
}

// Work done every so often, one pass at a time: a tick that comes while a pass
// runs is skipped, a caller asking for a pass meanwhile joins the one running,
// and stop() waits for it. (The reaper, the risk rules' poll, and the
// datacenter services' refreshes, lease renewals, marks copies and failover
// checks.)

export class Periodic<T = void> {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<T> | undefined;

  constructor(
    private readonly everyMs: number,
    private readonly pass: () => Promise<T>,
    /** A failed pass started by the timer (one asked for by now() rejects to its caller instead). */
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Start the timer (unref'd: it never keeps the process alive). */
  start(): void {
    this.timer ??= setInterval(() => this.now().catch(this.onError), this.everyMs);
    this.timer.unref();
  }

  /** A pass now, or the one running. */
  now(): Promise<T> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** No more ticks; waits for the pass running, if any (its failure is not this call's). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }
}

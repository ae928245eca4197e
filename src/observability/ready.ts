// Readiness: named checks run together when /readyz is asked (each bounded
// in time), e.g. "redis" (PING), "store" (a read answers), "shards" (a logic
// node owns one, or every shard has a live owner), "registry" (the gateway is
// registered). Ready when all pass and the role is not stopping.
import { scrub } from './log.js';

/** Resolves when ready; rejects (or throws) with the reason when not. */
export type ReadyCheck = () => Promise<void>;

export interface ReadyReport {
  ready: boolean;
  /** Each check: 'ok', or why not. */
  checks: Record<string, string>;
}

/** How long one check may take before it counts as failed. */
const CHECK_TIMEOUT_MS = 2000;

export class Readiness {
  private readonly checks = new Map<string, ReadyCheck>();
  private stopping = false;

  add(name: string, check: ReadyCheck): this {
    this.checks.set(name, check);
    return this;
  }

  /** From now on not ready: load balancers stop sending new clients while the role drains. */
  markStopping(): void {
    this.stopping = true;
  }

  async report(): Promise<ReadyReport> {
    const names = [...this.checks.keys()];
    const results = await Promise.all([...this.checks.values()].map((check) => bounded(check)));
    const checks: Record<string, string> = {};
    names.forEach((name, i) => {
      checks[name] = results[i]!;
    });
    if (this.stopping) checks.stopping = 'the node is stopping';
    return { ready: Object.values(checks).every((v) => v === 'ok'), checks };
  }
}

async function bounded(check: ReadyCheck): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
  });
  try {
    await Promise.race([Promise.resolve().then(check), timeout]);
    return 'ok';
  } catch (err) {
    return scrub(err instanceof Error ? err.message : String(err)); // no password of a URL in the answer
  } finally {
    clearTimeout(timer);
  }
}

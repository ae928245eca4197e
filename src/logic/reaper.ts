// The reaper: removes the sessions of gateways that died without logging
// their users out (kill -9, power loss, a partition). A gateway is dead when
// its registry entry expired; its sessions are then dropped, so pushes for
// its users go to sync (stored, fetched on reconnect) instead of to a stream
// nobody reads. Every logic node runs one; dropNode is safe to run twice.
import type { Registry } from '../engines/registry.js';
import type { Sessions } from '../engines/sessions.js';
import type { Watches } from '../engines/watches.js';
import { log as rootLog } from '../observability/log.js';
import { Periodic } from '../periodic.js';

const logger = rootLog.child({ component: 'reaper' });

export interface ReaperDeps {
  sessions: Sessions;
  registry: Registry;
  /** The presence watches dead gateways left are dropped too. */
  watches?: Watches;
}

export class Reaper {
  private readonly passes: Periodic<string[]>;

  constructor(
    intervalMs: number,
    private readonly deps: ReaperDeps,
    private readonly log: (line: string) => void = (line) => logger.info(line),
  ) {
    this.passes = new Periodic(intervalMs, () => this.reapNow(), (err) => logger.warn({ err }, 'pass failed'));
  }

  start(): void {
    this.passes.start();
  }

  /** One pass (or the one running): drop the sessions (and watches) of every node that holds some and is not live. Returns the nodes dropped. */
  reap(): Promise<string[]> {
    return this.passes.now();
  }

  private async reapNow(): Promise<string[]> {
    const holding = await this.deps.sessions.nodes();
    const watching = (await this.deps.watches?.nodes()) ?? [];
    if (holding.length === 0 && watching.length === 0) return [];
    const live = new Set((await this.deps.registry.live('gateway')).map((n) => n.id));
    const dead = holding.filter((n) => !live.has(n));
    for (const node of dead) {
      const dropped = await this.deps.sessions.dropNode(node);
      if (dropped > 0) this.log(`gateway ${node} is gone: dropped ${dropped} sessions`);
    }
    for (const node of watching) {
      if (live.has(node)) continue;
      const dropped = await this.deps.watches!.dropNode(node);
      if (dropped > 0) this.log(`gateway ${node} is gone: dropped its presence watches of ${dropped} users`);
      if (!dead.includes(node)) dead.push(node);
    }
    return dead;
  }

  stop(): Promise<void> {
    return this.passes.stop();
  }
}

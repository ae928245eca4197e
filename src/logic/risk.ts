// The risk service: a consumer group (`risk`) of the committed stream. It
// reads every committed message once, at its own pace, beside the send path:
// while it is down chat goes on and its lag grows; when it returns it reads
// on from its group's offsets. What it has seen is counted in the same step
// as its acks (CommittedEffects), so the counts are exact across restarts.
//
// It inspects after the fact; a check that must hold a message back runs on
// the send path instead (Pipeline's ContentFilter).
import { RISK_GROUP, type Bus, type Committed, type CommittedEffects, type Subscription } from '../engines/bus.js';

/** What the risk group counts (Bus.committedCounters(RISK_GROUP)). */
export interface RiskCounts {
  /** Messages users (and the admin API) sent. */
  messages: number;
  /** Timeline events (group changes, recalls). */
  events: number;
}

/** Turns the group's counters into RiskCounts (absent: 0). */
export function riskCounts(counters: ReadonlyMap<string, number>): RiskCounts {
  return { messages: counters.get('messages') ?? 0, events: counters.get('events') ?? 0 };
}

export class RiskService {
  private sub: Subscription | undefined;

  constructor(private readonly deps: { bus: Bus }) {}

  start(): void {
    this.sub = this.deps.bus.consumeCommitted(RISK_GROUP, (batch) => this.inspect(batch));
  }

  async stop(): Promise<void> {
    await this.sub?.close();
  }

  /** Counts what was committed; the rules of the risk issue read the same batch. */
  async inspect(batch: readonly Committed[]): Promise<CommittedEffects> {
    let messages = 0;
    let events = 0;
    for (const c of batch) {
      if (c.message?.event) events++;
      else messages++;
    }
    return { counters: { messages, events } };
  }

  counts(): Promise<RiskCounts> {
    return this.deps.bus.committedCounters(RISK_GROUP).then(riskCounts);
  }
}

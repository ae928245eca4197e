// The risk service: a consumer group (`risk`) of the committed stream. It
// reads every committed message once, at its own pace, beside the send path:
// while it is down chat goes on and its lag grows; when it returns it reads
// on from its group's offsets. What it has seen is counted in the same step
// as its acks (CommittedEffects), so the counts are exact across restarts.
//
// It scores spam after the fact (src/risk/spam.ts) and acts on what trips a
// rule (src/risk/actions.ts); a check that must hold a message back runs on
// the send path instead (src/risk/control.ts, Pipeline's ContentFilter).
import { RISK_GROUP, type Bus, type Committed, type CommittedEffects, type Subscription } from '../engines/bus.js';
import { messageFromWire } from '../protocol/index.js';
import type { RiskControl } from '../risk/control.js';
import type { RiskActions } from '../risk/actions.js';
import type { SpamScorer } from '../risk/spam.js';

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

  constructor(private readonly deps: { bus: Bus; control?: RiskControl; scorer?: SpamScorer; actions?: RiskActions }) {}

  start(): void {
    // What the sync service copied here from another datacenter was counted and scored in its home.
    this.sub = this.deps.bus.consumeCommitted(RISK_GROUP, (batch) => this.inspect(batch.filter((c) => !c.replicated)));
  }

  async stop(): Promise<void> {
    await this.sub?.close();
  }

  /** Counts what was committed, and runs the spam rules in force on it (a failure hands the batch again). */
  async inspect(batch: readonly Committed[]): Promise<CommittedEffects> {
    let messages = 0;
    let events = 0;
    for (const c of batch) {
      if (c.message?.event) events++;
      else messages++;
    }
    const { control, scorer, actions } = this.deps;
    if (control && scorer) {
      const spam = control.rules.document.spam;
      const now = Date.now();
      const trips = await scorer.score(spam, batch.flatMap((c) => (c.message ? [messageFromWire(c.message)] : [])), now);
      if (trips.length > 0 && spam && actions) await actions.act(trips, spam.actions);
    }
    return { counters: { messages, events } };
  }

  counts(): Promise<RiskCounts> {
    return this.deps.bus.committedCounters(RISK_GROUP).then(riskCounts);
  }
}

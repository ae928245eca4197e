// Risk control as a process runs it: the rules in force (every process of
// the logic tier: the send path filters with them, the API puts them, the
// risk service reads its spam rules and webhook target in them), and, where
// the process joins the committed stream's `risk` and `webhooks` groups, the
// spam scoring with its actions and the after-* webhooks.
import type { Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { DatacenterStore, RiskStore } from '../engines/store.js';
import type { RiskMetrics } from '../observability/metrics.js';
import { BusRequester } from '../logic/bus-requests.js';
import { RiskService } from '../logic/risk.js';
import { RiskActions } from './actions.js';
import { RiskControl } from './control.js';
import { SpamScorer, type Windows } from './spam.js';
import { AFTER_EVENT_TYPES, WebhookService } from './webhooks.js';

/** How long a risk action (a recall, a mute) waits for logic's answer. */
const RISK_REQUEST_TIMEOUT_MS = 5000;
/** The longest pause between two tries of an after-* event. */
const WEBHOOK_MAX_BACKOFF_MS = 30_000;

export interface RiskTierOptions {
  nodeId: string;
  maxTextBytes: number;
  /** Join the committed stream's `risk` group (spam rules, actions). */
  risk: boolean;
  /** Join its `webhooks` group (after-send, after-group-change, after-recall, after-edit, after-delete). */
  webhooks: boolean;
  /** Where the spam windows live (memory in one process, Redis in a cluster); only with `risk`. */
  windows?: () => Windows;
}

export interface RiskTier {
  control: RiskControl;
  service: RiskService | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function riskTier(options: RiskTierOptions, deps: { bus: Bus; sessions: Sessions; store: RiskStore & Pick<DatacenterStore, 'putRevocation'>; metrics: RiskMetrics }): RiskTier {
  const control = new RiskControl({ maxTextBytes: options.maxTextBytes }, { store: deps.store, metrics: deps.metrics });
  const windows = options.risk ? (options.windows?.() ?? undefined) : undefined;
  // Its actions wait less than the API's requests: a trip's recalls must not hold the risk group for long while logic is away.
  const requests = options.risk ? new BusRequester(deps.bus, `${options.nodeId}.risk`, RISK_REQUEST_TIMEOUT_MS) : undefined;
  const service = options.risk ? new RiskService({
    bus: deps.bus,
    control,
    scorer: windows ? new SpamScorer({ windows, store: deps.store }) : undefined,
    actions: requests && windows
      ? new RiskActions({ requests, sessions: deps.sessions, bus: deps.bus, store: deps.store, windows, metrics: deps.metrics })
      : undefined,
  }) : undefined;
  const webhooks = options.webhooks ? new WebhookService({
    target: () => {
      const hook = control.rules.document.webhooks;
      return hook ? { url: hook.url, events: hook.events ?? AFTER_EVENT_TYPES } : undefined;
    },
    secret: () => control.webhookSecret(),
    // Until delivered (or refused 4xx): a receiver down for an hour gets its events when it is back. Meanwhile the
    // group's lag grows (longlink_consumer_lag{group="webhooks"}), bounded by the committed stream's length bound.
    attempts: Number.POSITIVE_INFINITY,
    maxBackoffMs: WEBHOOK_MAX_BACKOFF_MS,
  }, { bus: deps.bus }, {
    onDelivered: (type, ms) => deps.metrics.webhook(type, ms / 1000),
    onFailed: (type, reason) => {
      if (reason === 'refused') deps.metrics.webhook(type, undefined, reason);
    },
    onAttemptFailed: (type, reason) => deps.metrics.webhook(type, undefined, reason),
  }) : undefined;
  return {
    control,
    service,
    async start() {
      await control.start();
      requests?.start();
      service?.start();
      webhooks?.start();
    },
    async stop() {
      await webhooks?.stop();
      await service?.stop();
      await requests?.stop();
      await control.stop();
      await windows?.close();
    },
  };
}

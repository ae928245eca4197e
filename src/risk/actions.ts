// What the risk service does about a tripped spam rule, through the paths
// that already exist, each written to the audit trail (GET /api/v1/risk/audit):
// - flag: only the audit entry;
// - recall: the messages in the rule's window, recalled by the service (the
//   system user, trusted: any message, any time), each once (its request id);
// - mute: the user, in every group those messages went to (the group's own
//   mute, by the service with the owner's rights);
// - revoke: the user's tokens (every device logged out and kicked, as
//   POST /api/v1/revoke does).
// A user who keeps tripping a rule within its window is acted on once (a
// claim on user and rule, shared by the risk processes through Windows); the
// messages sent meanwhile are recalled at the next trips, each once.
import { SYSTEM_USER, groupIdOf, isGroupConversation, type FrameBodyInit } from '../protocol/index.js';
import type { Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { DatacenterStore, RiskAuditDraft, RiskStore } from '../engines/store.js';
import type { BusRequester } from '../logic/bus-requests.js';
import type { RiskMetrics } from '../observability/metrics.js';
import { revokeTokens } from '../auth/revocation.js';
import { log as rootLog } from '../observability/log.js';
import type { MessageRef, Trip, Windows } from './spam.js';
import type { RulesDocument } from './rules.js';

const log = rootLog.child({ component: 'risk' });

export type RiskAction = NonNullable<RulesDocument['spam']>['actions'][number];

/** Messages recalled for one trip at most (the newest of its window). */
const MAX_RECALLS = 100;
/** Recalls in flight at once for one trip. */
const RECALLS_IN_FLIGHT = 8;

export class RiskActions {
  constructor(private readonly deps: { requests: BusRequester; sessions: Sessions; bus: Bus; store: RiskStore & Pick<DatacenterStore, 'putRevocation'>; windows: Windows; metrics?: RiskMetrics }) {}

  /**
   * Act on the trips of one batch; their audit entries are written in one
   * step. A failed audit write gives the claims back and throws, so the
   * batch is handed again and acted on again (each recall and mute is
   * applied once: its request id).
   */
  async act(trips: readonly Trip[], actions: readonly RiskAction[]): Promise<void> {
    const audit: RiskAuditDraft[] = [];
    const claimed: string[] = [];
    const claim = async (key: string, ttlMs: number) => {
      const taken = await this.deps.windows.claim(key, ttlMs);
      if (taken) claimed.push(key);
      return taken;
    };
    try {
      for (const trip of trips) {
        const first = await claim(`acted:${trip.userId}:${trip.rule}`, trip.windowMs);
        // The newest messages not yet taken back (by this trip or an earlier one), at most MAX_RECALLS.
        const fresh: MessageRef[] = [];
        if (actions.includes('recall')) {
          for (let i = trip.messages.length - 1; i >= 0 && fresh.length < MAX_RECALLS; i--) {
            const m = trip.messages[i]!;
            if (await claim(`recall:${m.conversationId}#${m.seq}`, trip.windowMs)) fresh.push(m);
          }
        }
        // Within the window: only what was not yet recalled is taken back; the other actions were done.
        const todo = first ? [...actions] : fresh.length > 0 ? ['recall' as const] : [];
        if (todo.length === 0) continue;
        const done: Record<string, unknown> = {};
        for (const action of todo) {
          try {
            done[action] = await this.run(action, trip, fresh);
            this.deps.metrics?.action(action);
          } catch (err) {
            log.warn({ err, action, rule: trip.rule }, 'a risk action failed');
            done[action] = { failed: err instanceof Error ? err.message : String(err) };
          }
        }
        audit.push({
          atMs: Date.now(), userId: trip.userId, rule: trip.rule, action: todo.join(','),
          detail: JSON.stringify({
            count: trip.count, threshold: trip.threshold, window_ms: trip.windowMs,
            messages: trip.messages.map((m) => ({ conversation_id: m.conversationId, seq: m.seq })), done,
          }),
        });
      }
      if (audit.length > 0) await this.deps.store.appendRiskAudit(audit);
    } catch (err) {
      // Nothing of this batch is taken as done: it is handed again, acted on again (recalls and mutes apply once: their
      // request ids), and audited then.
      await Promise.allSettled(claimed.map((c) => this.deps.windows.release(c)));
      throw err;
    }
  }

  private async run(action: RiskAction, trip: Trip, fresh: readonly MessageRef[]): Promise<unknown> {
    switch (action) {
      case 'flag':
        return true;
      case 'recall': {
        // Each recall that fails gives its claim back: the next trip tries it again.
        let recalled = 0;
        const queue = [...fresh];
        await Promise.all(Array.from({ length: Math.min(RECALLS_IN_FLIGHT, queue.length) }, async () => {
          for (let m = queue.shift(); m; m = queue.shift()) {
            const ok = await this.request(`risk:recall:${m.conversationId}:${m.seq}`, {
              case: 'recall', value: { conversationId: m.conversationId, seq: BigInt(m.seq) },
            }).catch(() => false);
            if (ok) recalled++;
            else await this.deps.windows.release(`recall:${m.conversationId}#${m.seq}`).catch(() => undefined);
          }
        }));
        return { recalled, of: fresh.length };
      }
      case 'mute': {
        const groups = [...new Set(trip.messages.filter((m) => isGroupConversation(m.conversationId)).map((m) => groupIdOf(m.conversationId)!))];
        const first = trip.messages[0]!;
        let muted = 0;
        for (const groupId of groups) {
          // Once per trip (the window's first message names it): a user unmuted by an admin is muted again at the next trip.
          const ok = await this.request(`risk:mute:${groupId}:${trip.userId}:${first.conversationId}#${first.seq}`, {
            case: 'group', value: { op: { case: 'mute', value: { groupId, userId: trip.userId, muted: true } } },
          });
          if (ok) muted++;
        }
        return { groups: muted, of: groups.length };
      }
      case 'revoke': {
        const result = await revokeTokens(this.deps, trip.userId);
        return { revoked_before_ms: result.revokedBeforeMs };
      }
    }
  }

  /** One request to logic as the service itself; false when refused (e.g. already recalled by a member, or not found). */
  private async request(requestId: string, body: FrameBodyInit): Promise<boolean> {
    const reply = await this.deps.requests.request({ userId: SYSTEM_USER, deviceId: 'risk', trusted: true, requestId, body });
    if (reply.body.case === 'error') {
      log.info({ code: reply.body.value.code, op: requestId.split(':')[1] }, 'a risk action was refused');
      return false;
    }
    return true;
  }
}

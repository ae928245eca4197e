// What the risk service does about a tripped spam rule, through the paths
// that already exist, each written to the audit trail (GET /api/v1/risk/audit):
// - flag: only the audit entry;
// - recall: the messages in the rule's window, recalled by the service (the
//   system user, trusted: any message, any time), each once (its request id);
// - mute: the user, in every group those messages went to (the group's own
//   mute, by the service with the owner's rights);
// - revoke: the user's tokens (every device logged out and kicked, as
//   POST /api/v1/revoke does).
// A user who keeps tripping a rule within its window is acted on once; only
// messages not yet recalled are recalled at the next trip.
import { SYSTEM_USER, groupIdOf, isGroupConversation, type FrameBodyInit } from '../protocol/index.js';
import type { Bus } from '../engines/bus.js';
import type { Sessions } from '../engines/sessions.js';
import type { RiskAuditDraft, RiskStore } from '../engines/store.js';
import type { BusRequester } from '../logic/bus-requests.js';
import type { RiskMetrics } from '../observability/metrics.js';
import { revokeTokens } from '../auth/revocation.js';
import { log as rootLog } from '../observability/log.js';
import type { MessageRef, Trip } from './spam.js';
import type { RulesDocument } from './rules.js';

const log = rootLog.child({ component: 'risk' });

export type RiskAction = NonNullable<RulesDocument['spam']>['actions'][number];

/** Users and rules acted on, remembered at most (the least recently acted on forgotten first). */
const MAX_ACTED = 10_000;

export class RiskActions {
  /** Per user and rule: until when it was acted on, and the messages already recalled. */
  private readonly acted = new Map<string, { untilMs: number; recalled: Set<string> }>();

  constructor(private readonly deps: { requests: BusRequester; sessions: Sessions; bus: Bus; store: RiskStore; metrics?: RiskMetrics }) {}

  /** Act on the trips of one batch; the audit entries are written in one step. */
  async act(trips: readonly Trip[], actions: readonly RiskAction[], nowMs: number): Promise<void> {
    const audit: RiskAuditDraft[] = [];
    for (const trip of trips) {
      const key = `${trip.userId}\n${trip.rule}`;
      let state = this.acted.get(key);
      const again = state !== undefined && state.untilMs > nowMs;
      if (!state || !again) {
        state = { untilMs: nowMs + trip.windowMs, recalled: new Set() };
        if (this.acted.size >= MAX_ACTED) this.acted.delete(this.acted.keys().next().value!);
      }
      this.acted.delete(key);
      this.acted.set(key, state);
      const fresh = trip.messages.filter((m) => !state.recalled.has(refKey(m)));
      // Within the window: only what was not yet recalled is taken back; the other actions were done.
      const todo = again ? actions.filter((a) => a === 'recall' && fresh.length > 0) : [...actions];
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
      for (const m of fresh) state.recalled.add(refKey(m));
      audit.push({
        atMs: nowMs, userId: trip.userId, rule: trip.rule, action: todo.join(','),
        detail: JSON.stringify({
          count: trip.count, threshold: trip.threshold, window_ms: trip.windowMs,
          messages: trip.messages.map((m) => ({ conversation_id: m.conversationId, seq: m.seq })), done,
        }),
      });
    }
    if (audit.length > 0) await this.deps.store.appendRiskAudit(audit);
  }

  private async run(action: RiskAction, trip: Trip, fresh: readonly MessageRef[]): Promise<unknown> {
    switch (action) {
      case 'flag':
        return true;
      case 'recall': {
        let recalled = 0;
        for (const m of fresh) {
          const ok = await this.request(`risk:recall:${m.conversationId}:${m.seq}`, { case: 'recall', value: { conversationId: m.conversationId, seq: BigInt(m.seq) } });
          if (ok) recalled++;
        }
        return { recalled };
      }
      case 'mute': {
        const groups = [...new Set(trip.messages.filter((m) => isGroupConversation(m.conversationId)).map((m) => groupIdOf(m.conversationId)!))];
        let muted = 0;
        for (const groupId of groups) {
          const ok = await this.request(`risk:mute:${groupId}:${trip.userId}:${trip.messages[0]!.seq}`, {
            case: 'group', value: { op: { case: 'mute', value: { groupId, userId: trip.userId, muted: true } } },
          });
          if (ok) muted++;
        }
        return { groups: muted };
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

function refKey(m: MessageRef): string {
  return `${m.conversationId}#${m.seq}`;
}

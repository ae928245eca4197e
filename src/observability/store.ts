// A Store that measures the one it wraps: latency of every call and the size
// of every write batch (longlink_store_*), and at debug level a trace line per
// stored message (messageTrace fields), so no store implementation changes.
import type { ConversationChange, ConversationHead, HomeRecord, MarkChanges, ReplicaEntry,
  AppendResult, ConversationCursor, ConversationOverview, ConversationState, DeliveredMark, GroupMeta, GroupRecord, Membership, MemberWindow, MessageDraft,
  ProfileRecord, ReactionLimits, FileRecord, SearchQuery, PushDeviceRecord, NotificationDraft, PendingNotification, RiskAuditDraft, RiskAuditEntry, RiskRulesRecord, Store, SyncConversation, SyncPosition, SyncReadOptions, SyncScan,
} from '../engines/store.js';
import type { ChatMessage, ReactionData } from '../protocol/index.js';
import { log, messageTrace } from './log.js';
import type { Metrics } from './metrics.js';

const logger = log.child({ component: 'store' });

export class InstrumentedStore implements Store {
  constructor(
    private readonly inner: Store,
    private readonly metrics: Metrics,
  ) {}

  get checksSenders(): boolean {
    return this.inner.checksSenders;
  }

  private async timed<T>(op: string, work: () => Promise<T>, batch?: number): Promise<T> {
    const start = process.hrtime.bigint();
    try {
      return await work();
    } catch (err) {
      this.metrics.storeFailed(op);
      throw err;
    } finally {
      this.metrics.storeCall(op, Number(process.hrtime.bigint() - start) / 1e9, batch);
    }
  }

  async append(drafts: readonly MessageDraft[]): Promise<AppendResult[]> {
    const results = await this.timed('append', () => this.inner.append(drafts), drafts.length);
    if (logger.isLevelEnabled('debug')) {
      for (let i = 0; i < results.length; i++) {
        const d = drafts[i]!;
        const m = results[i]!.message;
        logger.debug({
          ...messageTrace({ fromUser: d.fromUser, clientMsgId: d.clientMsgId, serverMsgId: m.serverMsgId, conversationId: m.conversationId, seq: m.seq }),
          duplicate: results[i]!.duplicate, batch: drafts.length,
        }, 'stored');
      }
    }
    return results;
  }

  after(conversationId: string, afterSeq: number, limit: number, maxSeq?: number): Promise<ChatMessage[]> {
    return this.timed('after', () => this.inner.after(conversationId, afterSeq, limit, maxSeq));
  }

  before(conversationId: string, beforeSeq: number, limit: number, minSeq?: number): Promise<ChatMessage[]> {
    return this.timed('before', () => this.inner.before(conversationId, beforeSeq, limit, minSeq));
  }

  message(conversationId: string, seq: number): Promise<ChatMessage | undefined> {
    return this.timed('message', () => this.inner.message(conversationId, seq));
  }

  messageByRequest(fromUser: string, clientMsgId: string): Promise<ChatMessage | undefined> {
    return this.timed('message_by_request', () => this.inner.messageByRequest(fromUser, clientMsgId));
  }

  unreadCount(conversationId: string, userId: string, afterSeq: number, maxSeq: number): Promise<number> {
    return this.timed('unread_count', () => this.inner.unreadCount(conversationId, userId, afterSeq, maxSeq));
  }

  expireBefore(cutoffMs: number, limit: number): Promise<number> {
    return this.timed('expire_before', () => this.inner.expireBefore(cutoffMs, limit));
  }

  expireByPartition(cutoffMs: number, spanMs: number, limit: number): Promise<{ removed: number; more: boolean } | undefined> {
    return this.timed('expire_by_partition', () => this.inner.expireByPartition(cutoffMs, spanMs, limit));
  }

  react(conversationId: string, seq: number, userId: string, emoji: string, add: boolean, atMs: number, limits: ReactionLimits): Promise<'changed' | 'unchanged' | 'too-many'> {
    return this.timed('react', () => this.inner.react(conversationId, seq, userId, emoji, add, atMs, limits));
  }

  reactions(conversationId: string, seqs: readonly number[], usersPerEmoji: number): Promise<Map<number, ReactionData[]>> {
    return this.timed('reactions', () => this.inner.reactions(conversationId, seqs, usersPerEmoji));
  }

  hiddenSeqs(userId: string, conversationId: string, seqs: readonly number[]): Promise<Set<number>> {
    return this.timed('hidden_seqs', () => this.inner.hiddenSeqs(userId, conversationId, seqs));
  }

  profiles(userIds: readonly string[]): Promise<Map<string, ProfileRecord>> {
    return this.timed('profiles', () => this.inner.profiles(userIds));
  }

  putFile(file: FileRecord): Promise<void> {
    return this.timed('put_file', () => this.inner.putFile(file));
  }

  files(ids: readonly string[]): Promise<Map<string, FileRecord>> {
    return this.timed('files', () => this.inner.files(ids));
  }

  mayReadFile(userId: string, fileId: string): Promise<boolean> {
    return this.timed('may_read_file', () => this.inner.mayReadFile(userId, fileId));
  }

  uploadsSince(userId: string, sinceMs: number): Promise<{ count: number; bytes: number }> {
    return this.timed('uploads_since', () => this.inner.uploadsSince(userId, sinceMs));
  }

  indexForSearch(messages: readonly { conversationId: string; seq: number }[]): Promise<void> {
    return this.timed('index_for_search', () => this.inner.indexForSearch(messages), messages.length);
  }

  search(query: SearchQuery): Promise<ChatMessage[]> {
    return this.timed('search', () => this.inner.search(query));
  }

  putPushDevice(device: PushDeviceRecord, maxPerUser: number): Promise<void> {
    return this.timed('put_push_device', () => this.inner.putPushDevice(device, maxPerUser));
  }

  removePushDevice(userId: string, deviceId: string, token?: string): Promise<void> {
    return this.timed('remove_push_device', () => this.inner.removePushDevice(userId, deviceId, token));
  }

  pushDevices(userIds: readonly string[]): Promise<Map<string, PushDeviceRecord[]>> {
    return this.timed('push_devices', () => this.inner.pushDevices(userIds));
  }

  setNotifyMuted(userId: string, conversationId: string, muted: boolean): Promise<void> {
    return this.timed('set_notify_muted', () => this.inner.setNotifyMuted(userId, conversationId, muted));
  }

  notifyMuted(conversationId: string, userIds: readonly string[]): Promise<Set<string>> {
    return this.timed('notify_muted', () => this.inner.notifyMuted(conversationId, userIds));
  }

  queueNotifications(drafts: readonly NotificationDraft[]): Promise<void> {
    return this.timed('queue_notifications', () => this.inner.queueNotifications(drafts), drafts.length);
  }

  claimNotifications(nowMs: number, limit: number, leaseMs: number): Promise<PendingNotification[]> {
    return this.timed('claim_notifications', () => this.inner.claimNotifications(nowMs, limit, leaseMs));
  }

  finishNotification(n: PendingNotification, nextDueAtMs: number): Promise<void> {
    return this.timed('finish_notification', () => this.inner.finishNotification(n, nextDueAtMs));
  }

  putProfile(userId: string, profile: ProfileRecord): Promise<void> {
    return this.timed('put_profile', () => this.inner.putProfile(userId, profile));
  }

  blocked(userId: string, limit: number): Promise<string[]> {
    return this.timed('blocked', () => this.inner.blocked(userId, limit));
  }

  setBlocked(userId: string, peer: string, blocked: boolean, max: number): Promise<boolean> {
    return this.timed('set_blocked', () => this.inner.setBlocked(userId, peer, blocked, max));
  }

  blockersOf(peer: string, userIds: readonly string[]): Promise<Set<string>> {
    return this.timed('blockers_of', () => this.inner.blockersOf(peer, userIds));
  }

  members(conversationId: string): Promise<string[]> {
    return this.timed('members', () => this.inner.members(conversationId));
  }

  isMember(conversationId: string, userId: string): Promise<boolean> {
    return this.timed('is_member', () => this.inner.isMember(conversationId, userId));
  }

  membership(conversationId: string, userId: string): Promise<Membership | undefined> {
    return this.timed('membership', () => this.inner.membership(conversationId, userId));
  }

  memberships(conversationId: string, userIds: readonly string[]): Promise<Map<string, Membership>> {
    return this.timed('memberships', () => this.inner.memberships(conversationId, userIds));
  }

  listForUser(userId: string): Promise<ConversationState[]> {
    return this.timed('list_for_user', () => this.inner.listForUser(userId));
  }

  conversationPage(userId: string, limit: number, after: ConversationCursor | undefined, previewChars: number): Promise<ConversationOverview[]> {
    return this.timed('conversation_page', () => this.inner.conversationPage(userId, limit, after, previewChars));
  }

  membersAt(conversationId: string, seq: number): Promise<string[]> {
    return this.timed('members_at', () => this.inner.membersAt(conversationId, seq));
  }

  largeGroups(conversationIds: readonly string[]): Promise<Set<string>> {
    return this.timed('large_groups', () => this.inner.largeGroups(conversationIds));
  }

  memberWindows(conversationId: string, sinceSeq: number): Promise<{ lastSeq: number; windows: MemberWindow[] }> {
    return this.timed('member_windows', () => this.inner.memberWindows(conversationId, sinceSeq));
  }

  writersTo(reader: string, writers: readonly string[]): Promise<Set<string>> {
    return this.timed('writers_to', () => this.inner.writersTo(reader, writers));
  }

  groupCounts(userIds: readonly string[]): Promise<Map<string, number>> {
    return this.timed('group_counts', () => this.inner.groupCounts(userIds));
  }

  group(groupId: string): Promise<GroupRecord | undefined> {
    return this.timed('group', () => this.inner.group(groupId));
  }

  groupMeta(groupId: string): Promise<GroupMeta | undefined> {
    return this.timed('group_meta', () => this.inner.groupMeta(groupId));
  }

  markRead(conversationId: string, userId: string, seq: number): Promise<number> {
    return this.timed('mark_read', () => this.inner.markRead(conversationId, userId, seq));
  }

  readCursors(conversationId: string): Promise<Map<string, number>> {
    return this.timed('read_cursors', () => this.inner.readCursors(conversationId));
  }

  pastWindows(conversationId: string, userId: string): Promise<{ fromSeq: number; toSeq: number }[]> {
    return this.timed('past_windows', () => this.inner.pastWindows(conversationId, userId));
  }

  advanceDelivered(updates: readonly { userId: string; deviceId: string; conversationId: string; seq: number }[]): Promise<DeliveredMark[]> {
    return this.timed('advance_delivered', () => this.inner.advanceDelivered(updates), updates.length);
  }

  delivered(userId: string, deviceId: string): Promise<Map<string, number>> {
    return this.timed('delivered', () => this.inner.delivered(userId, deviceId));
  }

  syncScan(
    userId: string, deviceId: string, cursors: ReadonlyMap<string, number>, limit: number, options: SyncReadOptions & { from?: SyncPosition },
  ): Promise<SyncScan> {
    return this.timed('sync_scan', () => this.inner.syncScan(userId, deviceId, cursors, limit, options));
  }

  syncStates(
    userId: string, deviceId: string, conversationIds: readonly string[], cursors: ReadonlyMap<string, number>, options: SyncReadOptions,
  ): Promise<SyncConversation[]> {
    return this.timed('sync_states', () => this.inner.syncStates(userId, deviceId, conversationIds, cursors, options));
  }

  riskRules(): Promise<RiskRulesRecord | undefined> {
    return this.timed('risk_rules', () => this.inner.riskRules());
  }

  dcHomes(): Promise<Map<string, HomeRecord>> {
    return this.timed('dc_homes', () => this.inner.dcHomes());
  }

  putDcHome(dc: string, record: HomeRecord): Promise<HomeRecord> {
    return this.timed('put_dc_home', () => this.inner.putDcHome(dc, record));
  }

  changedSince(sinceMs: number, limit: number): Promise<ConversationChange[]> {
    return this.timed('changed_since', () => this.inner.changedSince(sinceMs, limit));
  }

  marksSince(sinceMs: number, limit: number, settleMs?: number): Promise<MarkChanges & { untilMs: number }> {
    return this.timed('marks_since', () => this.inner.marksSince(sinceMs, limit, settleMs));
  }

  mergeMarks(changes: MarkChanges): Promise<{ moved: MarkChanges['reads']; missing: Pick<MarkChanges, 'reads' | 'cursors'> }> {
    return this.timed('merge_marks', () => this.inner.mergeMarks(changes));
  }

  putRevocation(userId: string, deviceId: string, beforeMs: number): Promise<void> {
    return this.timed('put_revocation', () => this.inner.putRevocation(userId, deviceId, beforeMs));
  }

  dcState(key: string): Promise<string | undefined> {
    return this.timed('dc_state', () => this.inner.dcState(key));
  }

  putDcState(key: string, value: string): Promise<void> {
    return this.timed('put_dc_state', () => this.inner.putDcState(key, value));
  }

  orphanFrom(conversationId: string, fromSeq: number, nowMs: number): Promise<number> {
    return this.timed('orphan_from', () => this.inner.orphanFrom(conversationId, fromSeq, nowMs));
  }

  heads(conversationIds: readonly string[]): Promise<Map<string, ConversationHead>> {
    return this.timed('heads', () => this.inner.heads(conversationIds));
  }

  replicate(entries: readonly ReplicaEntry[]): Promise<boolean[]> {
    return this.timed('replicate', () => this.inner.replicate(entries), entries.length);
  }

  riskRulesVersion(): Promise<number> {
    return this.timed('risk_rules_version', () => this.inner.riskRulesVersion());
  }

  putRiskRules(document: string, nowMs: number): Promise<number> {
    return this.timed('put_risk_rules', () => this.inner.putRiskRules(document, nowMs));
  }

  appendRiskAudit(entries: readonly RiskAuditDraft[]): Promise<void> {
    return this.timed('append_risk_audit', () => this.inner.appendRiskAudit(entries), entries.length);
  }

  riskAudit(query: { limit: number; beforeId?: number; userId?: string }): Promise<RiskAuditEntry[]> {
    return this.timed('risk_audit', () => this.inner.riskAudit(query));
  }

  webhookSecret(candidate: string): Promise<string> {
    return this.timed('webhook_secret', () => this.inner.webhookSecret(candidate));
  }

  firstSeen(userIds: readonly string[], nowMs: number): Promise<Map<string, number>> {
    return this.timed('first_seen', () => this.inner.firstSeen(userIds, nowMs), userIds.length);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

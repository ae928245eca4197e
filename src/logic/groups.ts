// Group management: create, add, remove, leave, dismiss, roles, mutes.
// Every change is a timeline event stored with its effect in one transaction
// (through the pipeline), so each device learns it in order, online or at sync.
import { randomUUID } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import {
  ErrorCode, GroupSchema, LonglinkError, SYSTEM_USER, groupConversationId, groupIdOf, isValidId, roleFromWire, roleToWire,
  type BodyOf, type Group, type GroupRoleName, type TimelineEventData,
} from '../protocol/index.js';
import type { AppendResult, Effect, GroupRecord, MessageDraft, Store } from '../engines/store.js';
import { GROUP_OPERATIONS, groupIdForCreate } from '../protocol/operations.js';
import { eventKey, type Pipeline } from './pipeline.js';
import { wasMemberAtDismissal } from './access.js';

export interface GroupOptions {
  /** Largest group, owner included. @default 20000 */
  maxMembers: number;
  /** Groups one user may be a current member of. @default 1000 */
  maxGroupsPerUser: number;
  /**
   * Who may add a user to a group: anyone; only its contacts (users it has
   * written to: it sent a message or acted in a conversation both are current
   * members of); or nobody but the HTTP API. @default 'contacts'
   */
  addPolicy: 'anyone' | 'contacts' | 'nobody';
}

export interface Actor {
  userId: string;
  deviceId: string;
  /** The request being applied: its events are stored under it, so it is applied once. */
  requestId: string;
  /** Sent by the service itself (the HTTP API, the risk service): the add policy does not apply. */
  trusted?: boolean;
}

/** The service itself acting (the risk service muting a spammer): the rights of the group's owner, in any group. */
function isService(actor: Actor): boolean {
  return actor.trusted === true && actor.userId === SYSTEM_USER;
}

const MAX_NAME = 64;
const MAX_IDS_PER_REQUEST = 1000;

export function groupToWire(g: GroupRecord): Group {
  return create(GroupSchema, {
    groupId: g.groupId,
    conversationId: g.conversationId,
    name: g.name,
    owner: g.owner,
    mutedAll: g.mutedAll,
    dismissed: g.dismissed,
    createdAtMs: BigInt(g.createdAtMs),
    members: g.members.map((m) => ({ userId: m.userId, role: roleToWire(m.role), muted: m.muted, readSeq: BigInt(m.readSeq) })),
  });
}

function ids(list: readonly string[], what: string): string[] {
  if (list.length > MAX_IDS_PER_REQUEST) throw new LonglinkError(ErrorCode.BAD_REQUEST, `at most ${MAX_IDS_PER_REQUEST} ${what} per request`);
  for (const id of list) {
    if (!isValidId(id) || id === SYSTEM_USER) throw new LonglinkError(ErrorCode.BAD_REQUEST, `${JSON.stringify(id)} is not a valid user id`);
  }
  return [...new Set(list)];
}

export class GroupService {
  constructor(
    private readonly options: GroupOptions,
    private readonly deps: { store: Store; pipeline: Pipeline },
  ) {}

  /**
   * Apply one request; returns the group after it. A change is applied once
   * per `requestId`: a redelivered or resent one finds the event it stored and
   * answers with the group as it is now.
   */
  async handle(actor: Actor, req: BodyOf<'group'>): Promise<GroupRecord> {
    const op = req.op;
    const key = actor.requestId !== '' ? actor.requestId : randomUUID();
    if (op.case !== undefined && GROUP_OPERATIONS[op.case].access === 'write') {
      const applied = await this.deps.store.messageByRequest(actor.userId, eventKey(key));
      const groupId = applied ? groupIdOf(applied.conversationId) : undefined;
      const g = groupId !== undefined ? await this.deps.store.group(groupId) : undefined;
      if (g) {
        await this.publishAgain(actor.userId, key);
        return g;
      }
    }
    actor = { ...actor, requestId: key };
    switch (op.case) {
      case 'create':
        return this.create(actor, op.value.name, op.value.memberIds, groupIdForCreate(actor.userId, key));
      case 'info':
        return this.joined(actor, op.value.groupId);
      case 'add':
        return this.add(actor, op.value.groupId, ids(op.value.userIds, 'users'));
      case 'remove':
        return this.remove(actor, op.value.groupId, ids(op.value.userIds, 'users'));
      case 'leave':
        return this.leave(actor, op.value.groupId);
      case 'dismiss':
        return this.dismiss(actor, op.value.groupId);
      case 'setRole':
        return this.setRole(actor, op.value.groupId, op.value.userId, roleFromWire(op.value.role));
      case 'mute':
        return this.mute(actor, op.value.groupId, op.value.userId, op.value.muted);
      default:
        throw new LonglinkError(ErrorCode.BAD_REQUEST, 'empty group request');
    }
  }

  async create(actor: Actor, name: string, memberIds: readonly string[], groupId: string): Promise<GroupRecord> {
    const trimmed = name.trim();
    if (trimmed.length === 0 || trimmed.length > MAX_NAME || trimmed.includes('\u0000')) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, `group name must be 1-${MAX_NAME} characters, without NUL`);
    }
    const members = ids(memberIds, 'members').filter((u) => u !== actor.userId);
    if (members.length + 1 > this.options.maxMembers) {
      throw new LonglinkError(ErrorCode.GROUP_FULL, `a group has at most ${this.options.maxMembers} members`);
    }
    if (await this.deps.store.groupMeta(groupId)) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, 'this request id already made another group; use a new request id');
    }
    await this.checkJoiners(actor, members, [actor.userId, ...members]);
    await this.commit(actor, groupConversationId(groupId), { type: 'group_created', actor: actor.userId, name: trimmed, userIds: members }, {
      op: 'create-group', groupId, name: trimmed, owner: actor.userId, members,
    });
    return (await this.deps.store.group(groupId))!;
  }

  private async add(actor: Actor, groupId: string, userIds: string[]): Promise<GroupRecord> {
    const g = await this.managed(actor, groupId);
    const current = new Set(g.members.map((m) => m.userId));
    const added = userIds.filter((u) => !current.has(u));
    if (added.length === 0) return g;
    if (current.size + added.length > this.options.maxMembers) {
      throw new LonglinkError(ErrorCode.GROUP_FULL, `a group has at most ${this.options.maxMembers} members`);
    }
    await this.checkJoiners(actor, added, added);
    await this.commit(actor, g.conversationId, { type: 'members_added', actor: actor.userId, userIds: added }, { op: 'add-members', userIds: added });
    return (await this.deps.store.group(groupId))!;
  }

  private async remove(actor: Actor, groupId: string, userIds: string[]): Promise<GroupRecord> {
    const g = await this.managed(actor, groupId);
    const role = roleIn(g, actor.userId)!;
    const removed: string[] = [];
    for (const u of userIds) {
      const target = roleIn(g, u);
      if (!target) continue;
      if (target === 'owner') throw new LonglinkError(ErrorCode.NOT_ADMIN, 'the owner cannot be removed');
      if (target === 'admin' && role !== 'owner') throw new LonglinkError(ErrorCode.NOT_ADMIN, 'only the owner removes admins');
      removed.push(u);
    }
    if (removed.length === 0) return g;
    await this.commit(actor, g.conversationId, { type: 'members_removed', actor: actor.userId, userIds: removed }, {
      op: 'remove-members', userIds: removed,
    }, removed);
    return (await this.deps.store.group(groupId))!;
  }

  private async leave(actor: Actor, groupId: string): Promise<GroupRecord> {
    const g = await this.joined(actor, groupId);
    const role = roleIn(g, actor.userId);
    if (role === 'owner') throw new LonglinkError(ErrorCode.FORBIDDEN, 'the owner cannot leave: make another member owner, or dismiss the group');
    await this.commit(actor, g.conversationId, { type: 'member_left', actor: actor.userId, userIds: [actor.userId] }, {
      op: 'remove-members', userIds: [actor.userId],
    }, [actor.userId]);
    return (await this.deps.store.group(groupId))!;
  }

  private async dismiss(actor: Actor, groupId: string): Promise<GroupRecord> {
    const g = await this.joined(actor, groupId);
    if (roleIn(g, actor.userId) !== 'owner') throw new LonglinkError(ErrorCode.NOT_ADMIN, 'only the owner dismisses the group');
    await this.commit(actor, g.conversationId, { type: 'dismissed', actor: actor.userId }, { op: 'dismiss' }, g.members.map((m) => m.userId));
    return (await this.deps.store.group(groupId))!;
  }

  private async setRole(actor: Actor, groupId: string, userId: string, role: GroupRoleName | undefined): Promise<GroupRecord> {
    const g = await this.joined(actor, groupId);
    if (roleIn(g, actor.userId) !== 'owner') throw new LonglinkError(ErrorCode.NOT_ADMIN, 'only the owner changes roles');
    if (!role) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'role must be MEMBER, ADMIN or OWNER');
    const current = roleIn(g, userId);
    if (!current) throw new LonglinkError(ErrorCode.NOT_MEMBER, `${userId} is not a member of this group`);
    if (userId === actor.userId) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'give ownership to another member instead');
    if (current === role) return g;
    if (role === 'owner') {
      // Transfer: the new owner first, then the old owner steps down to admin, in one transaction.
      await this.commitMany(actor, g.conversationId, [
        [{ type: 'role_changed', actor: actor.userId, userIds: [userId], role: 'owner' }, { op: 'set-role', userId, role: 'owner' }],
        [{ type: 'role_changed', actor: actor.userId, userIds: [actor.userId], role: 'admin' }, { op: 'set-role', userId: actor.userId, role: 'admin' }],
      ]);
    } else {
      await this.commit(actor, g.conversationId, { type: 'role_changed', actor: actor.userId, userIds: [userId], role }, { op: 'set-role', userId, role });
    }
    return (await this.deps.store.group(groupId))!;
  }

  private async mute(actor: Actor, groupId: string, userId: string, muted: boolean): Promise<GroupRecord> {
    const g = await this.managed(actor, groupId);
    if (userId !== '') {
      const target = roleIn(g, userId);
      if (!target) throw new LonglinkError(ErrorCode.NOT_MEMBER, `${userId} is not a member of this group`);
      if (target === 'owner' || (target === 'admin' && !isService(actor) && roleIn(g, actor.userId) !== 'owner')) {
        throw new LonglinkError(ErrorCode.NOT_ADMIN, 'only the owner mutes admins; nobody mutes the owner');
      }
      if (g.members.find((m) => m.userId === userId)!.muted === muted) return g;
      await this.commit(actor, g.conversationId, { type: 'mute_changed', actor: actor.userId, userIds: [userId], muted }, { op: 'mute', userId, muted });
    } else {
      if (g.mutedAll === muted) return g;
      await this.commit(actor, g.conversationId, { type: 'mute_changed', actor: actor.userId, muted }, { op: 'mute', muted });
    }
    return (await this.deps.store.group(groupId))!;
  }

  /**
   * Whether `invited` may be put into a group by the actor (the add policy),
   * and whether each of `joining` has room for one more group.
   */
  private async checkJoiners(actor: Actor, invited: readonly string[], joining: readonly string[]): Promise<void> {
    const policy = this.options.addPolicy;
    if (invited.length > 0 && !actor.trusted && policy !== 'anyone') {
      if (policy === 'nobody') throw new LonglinkError(ErrorCode.NOT_CONTACT, 'users are added to groups by the service only');
      const contacts = await this.deps.store.writersTo(actor.userId, invited);
      const stranger = invited.find((u) => !contacts.has(u));
      if (stranger !== undefined) {
        throw new LonglinkError(ErrorCode.NOT_CONTACT, `${stranger} has not written to you; a user can be added only by someone it has written to`);
      }
    }
    const counts = await this.deps.store.groupCounts(joining);
    const full = joining.find((u) => (counts.get(u) ?? 0) >= this.options.maxGroupsPerUser);
    if (full !== undefined) {
      throw new LonglinkError(ErrorCode.TOO_MANY_GROUPS, `${full} is in ${this.options.maxGroupsPerUser} groups, the most allowed`);
    }
  }

  private async load(groupId: string): Promise<GroupRecord> {
    if (!isValidId(groupId)) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'group_id is not a valid id');
    const g = await this.deps.store.group(groupId);
    if (!g) throw new LonglinkError(ErrorCode.NOT_FOUND, 'no such group');
    return g;
  }

  /**
   * The group, if the actor is a current member and it is not dismissed. An
   * outsider learns nothing of the group's state (not even that it was
   * dismissed), only that it is not a member.
   */
  private async joined(actor: Actor, groupId: string): Promise<GroupRecord> {
    const g = await this.load(groupId);
    if (g.dismissed) {
      // Dismissal ended every membership: those it ended are told so, anyone else only that they are not in it.
      if (await wasMemberAtDismissal(this.deps.store, g.conversationId, actor.userId)) {
        throw new LonglinkError(ErrorCode.GROUP_DISMISSED, 'the group was dismissed');
      }
      throw new LonglinkError(ErrorCode.NOT_MEMBER, 'not a member of this group');
    }
    if (!isService(actor) && !roleIn(g, actor.userId)) throw new LonglinkError(ErrorCode.NOT_MEMBER, 'not a member of this group');
    return g;
  }

  /** The group, if the actor is its owner or an admin. */
  private async managed(actor: Actor, groupId: string): Promise<GroupRecord> {
    const g = await this.joined(actor, groupId);
    if (isService(actor)) return g;
    const role = roleIn(g, actor.userId);
    if (role === 'member') throw new LonglinkError(ErrorCode.NOT_ADMIN, 'only the owner and admins manage the group');
    return g;
  }

  private commit(actor: Actor, conversationId: string, event: TimelineEventData, effect: Effect, alsoNotify?: string[]): Promise<unknown> {
    return this.commitMany(actor, conversationId, [[event, effect]], alsoNotify);
  }

  /**
   * A write applied before, handed again (its process may have died between
   * the commit and the publish): its events go out again, as repeats (clients
   * drop what they have; the committed stream's groups drop what they saw), so
   * none is lost to a crash at the wrong moment.
   */
  private async publishAgain(userId: string, requestId: string): Promise<void> {
    const results: AppendResult[] = [];
    const notify: (readonly string[] | undefined)[] = [];
    for (let part = 0; part < 8; part++) {
      const event = await this.deps.store.messageByRequest(userId, eventKey(requestId, part));
      if (!event) break;
      results.push({ message: event, duplicate: true });
      notify.push(await this.deps.pipeline.alsoNotifyOf(event));
    }
    await this.deps.pipeline.pushResults(results, notify);
  }

  private async commitMany(actor: Actor, conversationId: string, changes: [TimelineEventData, Effect][], alsoNotify?: string[]): Promise<void> {
    const now = Date.now();
    const drafts: MessageDraft[] = changes.map(([event, effect], i) => ({
      conversationId, kind: 'group', members: [], fromUser: actor.userId, fromDevice: actor.deviceId,
      clientMsgId: eventKey(actor.requestId, i), serverMsgId: randomUUID(), text: '', sentAtMs: now, event, effect,
    }));
    await this.deps.pipeline.commit(drafts, drafts.map(() => alsoNotify));
  }
}

function roleIn(g: GroupRecord, userId: string): GroupRoleName | undefined {
  return g.members.find((m) => m.userId === userId)?.role;
}

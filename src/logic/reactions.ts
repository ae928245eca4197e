// Reactions: a user's emoji on a message it may see, there or not. Stored as
// rows with a count per emoji (store.ts, "Reactions"), read back with the
// messages (sync and history carry each message's reactions as they are),
// and pushed to the conversation's members gathered: the changes to one
// message within GATHER_MS go out as one Event.reactions holding its
// reactions as they are then. A message of a 10,000-member group that gets a
// hundred reactions in a second costs each member's devices a few events,
// not a hundred, and a large group's go once per gateway (fan-out as its
// messages do).
import { ErrorCode, LonglinkError, REACTION_USERS, encodeFrame, makeFrame, type ReactionData } from '../protocol/index.js';
import type { Store } from '../engines/store.js';
import type { Pipeline } from './pipeline.js';
import { requireView } from './access.js';
import type { BlockService } from './blocks.js';
import { seqsByConversation } from './content.js';
import { log as rootLog } from '../observability/log.js';

const log = rootLog.child({ component: 'reactions' });

/** Different emojis one message may carry. */
export const EMOJIS_PER_MESSAGE = 50;
/** Emojis one user may put on one message. */
export const REACTIONS_PER_USER = 20;
/** Longest emoji, UTF-8 bytes (a family or flag sequence fits). */
const EMOJI_BYTES = 32;
/** Changes to one message within this long are pushed as one event. */
export const GATHER_MS = 250;
/** Messages with changes waiting at most (past it, the oldest go out at once). */
const WAITING_MAX = 10_000;

export class ReactionService {
  /** `${conversationId}\n${seq}` of the messages whose reactions changed and are not pushed yet. */
  private readonly waiting = new Map<string, { conversationId: string; seq: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: { store: Store; pipeline: Pipeline; blocks: BlockService }) {}

  /** Add (or remove) the user's emoji on a message it may see now. */
  async react(userId: string, conversationId: string, seq: number, emoji: string, remove: boolean): Promise<void> {
    if (emoji === '' || Buffer.byteLength(emoji, 'utf8') > EMOJI_BYTES || /[\s\p{Cc}]/u.test(emoji)) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, `an emoji is 1-${EMOJI_BYTES} bytes without spaces or control characters`);
    }
    const view = await requireView(this.deps.store, conversationId, userId, true);
    const target = seq >= view.fromSeq ? await this.deps.store.message(conversationId, seq) : undefined;
    if (!target || target.event || target.recalledBy !== undefined || target.deletedBy !== undefined) {
      throw new LonglinkError(ErrorCode.NOT_FOUND, 'no such message');
    }
    if (!remove) await this.deps.blocks.requireNotBlocked(userId, conversationId);
    const result = await this.deps.store.react(conversationId, seq, userId, emoji, !remove, Date.now(), {
      emojisPerMessage: EMOJIS_PER_MESSAGE, perUser: REACTIONS_PER_USER,
    });
    if (result === 'too-many') {
      throw new LonglinkError(ErrorCode.TOO_MANY_REACTIONS, `a message takes ${EMOJIS_PER_MESSAGE} different emojis, and ${REACTIONS_PER_USER} of yours`);
    }
    if (result === 'changed') this.changed(conversationId, seq);
  }

  /** Pushes what is waiting now (a stopping node). */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = [...this.waiting.values()];
    this.waiting.clear();
    const byConversation = new Map<string, number[]>();
    for (const { conversationId, seq } of batch) {
      const seqs = byConversation.get(conversationId);
      if (seqs) seqs.push(seq);
      else byConversation.set(conversationId, [seq]);
    }
    await Promise.all([...byConversation].map(async ([conversationId, seqs]) => {
      const now = await this.deps.store.reactions(conversationId, seqs, REACTION_USERS);
      await Promise.all(seqs.map((seq) => this.deps.pipeline.deliverEvent(conversationId, seq, encodeFrame(makeFrame(0, {
        case: 'event',
        value: { body: { case: 'reactions', value: { conversationId, seq: BigInt(seq), reactions: toWire(now.get(seq) ?? []) } } },
      })))));
    }));
  }

  private changed(conversationId: string, seq: number): void {
    this.waiting.set(`${conversationId}\n${seq}`, { conversationId, seq });
    if (this.waiting.size >= WAITING_MAX) this.flushSoon(0);
    else this.flushSoon(GATHER_MS);
  }

  private flushSoon(ms: number): void {
    if (this.timer && ms > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush().catch((err: unknown) => log.warn({ err }, 'pushing reactions failed; devices read them with the messages'));
    }, ms);
    this.timer.unref();
  }
}

function toWire(reactions: readonly ReactionData[]): { emoji: string; count: number; users: string[] }[] {
  return reactions.map((r) => ({ emoji: r.emoji, count: r.count, users: r.users }));
}

/** Messages read back get their reactions (one read per conversation of the page); changed in place. */
export async function fillReactions(store: Store, messages: { conversationId: string; seq: number; event?: unknown; reactions?: ReactionData[] }[]): Promise<void> {
  const found = new Map<string, ReactionData[]>();
  await Promise.all([...seqsByConversation(messages)].map(async ([conversationId, seqs]) => {
    for (const [seq, r] of await store.reactions(conversationId, seqs, REACTION_USERS)) found.set(`${conversationId}\n${seq}`, r);
  }));
  if (found.size === 0) return;
  for (const m of messages) {
    const r = found.get(`${m.conversationId}\n${m.seq}`);
    if (r) m.reactions = r;
  }
}

// Blocking: a user blocks another, whose 1:1 messages to it are then refused
// (BLOCKED) and to whom its presence looks offline; group messages stay
// visible both ways. A block request is ordered in the 1:1 conversation of the
// two users (operations.ts), the partition its sends are ordered in, so the
// node that owns that partition answers both: the cache below is updated by
// the blocks it applies and forgotten when it takes over partitions.
import { ErrorCode, LonglinkError, SYSTEM_USER, directPeer, isValidId } from '../protocol/index.js';
import type { Store } from '../engines/store.js';

/** Users one user may block. */
export const MAX_BLOCKS = 1000;
/** Pairs whose answer is kept (then all are forgotten and read again). */
const CACHED_PAIRS = 100_000;

export class BlockService {
  /** `${blocker}\n${peer}` → blocks. */
  private readonly cache = new Map<string, boolean>();

  constructor(private readonly deps: { store: Store }) {}

  /** Whether `blocker` blocks `peer`. */
  async blocks(blocker: string, peer: string): Promise<boolean> {
    const key = `${blocker}\n${peer}`;
    const known = this.cache.get(key);
    if (known !== undefined) return known;
    const blocked = (await this.deps.store.blockersOf(peer, [blocker])).has(blocker);
    this.remember(key, blocked);
    return blocked;
  }

  /** Block or unblock `peer` (an empty peer only lists); the users `userId` blocks after the change. */
  async block(userId: string, peer: string, blocked: boolean): Promise<string[]> {
    if (peer !== '') {
      if (!isValidId(peer)) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'user_id is not a valid user id');
      if (peer === userId || peer === SYSTEM_USER) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'you cannot block yourself or the system user');
      if (!await this.deps.store.setBlocked(userId, peer, blocked, MAX_BLOCKS)) {
        throw new LonglinkError(ErrorCode.TOO_MANY_BLOCKS, `you block ${MAX_BLOCKS} users already; unblock one first`);
      }
      this.remember(`${userId}\n${peer}`, blocked);
    }
    return this.deps.store.blocked(userId, MAX_BLOCKS);
  }

  /** Refuses BLOCKED when `userId` writes into a 1:1 whose other member blocks it (sends, edits, reactions). */
  async requireNotBlocked(userId: string, conversationId: string): Promise<void> {
    const peer = directPeer(conversationId, userId);
    if (peer === undefined || peer === userId) return;
    if (await this.blocks(peer, userId)) throw new LonglinkError(ErrorCode.BLOCKED, 'this user does not take your messages');
  }

  /** Which of `userIds` block `peer` (not cached: presence asks for many at once). */
  blockersOf(peer: string, userIds: readonly string[]): Promise<Set<string>> {
    return this.deps.store.blockersOf(peer, userIds);
  }

  forget(): void {
    this.cache.clear();
  }

  private remember(key: string, blocked: boolean): void {
    if (this.cache.size >= CACHED_PAIRS) this.cache.clear();
    this.cache.set(key, blocked);
  }
}

// Profiles: a user's display name and avatar URL, set by the user
// (SetProfile) or by the business through the admin API (as that user), read
// by anyone for up to PROFILES_PER_QUERY users at once. Kept by the
// datacenter where they were set.
import { ErrorCode, LonglinkError, isValidId } from '../protocol/index.js';
import type { ProfileRecord, Store } from '../engines/store.js';

/** Users one profile query may name. */
export const PROFILES_PER_QUERY = 100;
const NAME_CHARS = 64;
const AVATAR_CHARS = 512;

export interface ProfileView extends ProfileRecord {
  userId: string;
}

export class ProfileService {
  constructor(private readonly deps: { store: Store }) {}

  /** Replace the user's profile (both fields; empty clears); returns it as stored. */
  async set(userId: string, name: string, avatarUrl: string): Promise<ProfileView> {
    const trimmed = name.trim();
    if ([...trimmed].length > NAME_CHARS || /\p{Cc}/u.test(trimmed)) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, `a name is at most ${NAME_CHARS} characters, without control characters`);
    }
    if (avatarUrl !== '' && !isHttpUrl(avatarUrl)) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, `avatar_url is an http(s) URL of at most ${AVATAR_CHARS} characters`);
    }
    const profile = { name: trimmed, avatarUrl, updatedAtMs: Date.now() };
    await this.deps.store.putProfile(userId, profile);
    return { userId, ...profile };
  }

  /** The profiles of these users, in the order asked (one never set: empty). */
  async query(userIds: readonly string[]): Promise<ProfileView[]> {
    if (userIds.length > PROFILES_PER_QUERY) throw new LonglinkError(ErrorCode.BAD_REQUEST, `at most ${PROFILES_PER_QUERY} users per profile query`);
    for (const u of userIds) if (!isValidId(u)) throw new LonglinkError(ErrorCode.BAD_REQUEST, `${JSON.stringify(u)} is not a valid user id`);
    const unique = [...new Set(userIds)];
    const found = await this.deps.store.profiles(unique);
    return unique.map((userId) => ({ userId, ...(found.get(userId) ?? { name: '', avatarUrl: '', updatedAtMs: 0 }) }));
  }
}

function isHttpUrl(s: string): boolean {
  // new URL() drops control characters (and NUL) that a store would then keep, or refuse: none is taken.
  if (s.length > AVATAR_CHARS || /[\p{Cc}\s]/u.test(s)) return false;
  try {
    const u = new URL(s);
    return u.protocol === 'https:' || u.protocol === 'http:';
  } catch {
    return false;
  }
}

export function profileToWire(p: ProfileView): { userId: string; name: string; avatarUrl: string; updatedAtMs: bigint } {
  return { userId: p.userId, name: p.name, avatarUrl: p.avatarUrl, updatedAtMs: BigInt(p.updatedAtMs) };
}

// The member ids typed into "Create group": separated by commas and/or
// spaces, checked here against the server's rule for user ids, so a typo is
// named next to the field instead of being sent (or silently split into two
// ids). No DOM here: test/web/members.test.ts runs it in Node.
import { SYSTEM_USER, isValidId } from '../protocol/ids.js';

export type ParsedMembers = { ok: true; ids: string[] } | { ok: false; error: string };

/**
 * The distinct user ids in `input`, in the order typed, without `me` (the
 * creator is the group's owner anyway). The first id the server would refuse
 * makes the whole input an error naming it.
 */
export function parseMembers(input: string, me: string): ParsedMembers {
  const ids: string[] = [];
  for (const id of input.split(/[\s,]+/)) {
    if (id === '') continue;
    if (!isValidId(id)) {
      return { ok: false, error: `“${id}” is not a user id (letters, digits and _ . @ -, at most 64).` };
    }
    if (id === SYSTEM_USER) return { ok: false, error: `“${id}” is reserved and cannot be a member.` };
    if (id !== me && !ids.includes(id)) ids.push(id);
  }
  return { ok: true, ids };
}

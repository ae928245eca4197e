// Homes: which datacenter assigns a conversation's seqs. One writer per
// conversation across datacenters: a write to a conversation homed elsewhere
// is forwarded there (src/dc/forward.ts) and acked once its home committed.
//
// - A conversation's home is chosen when it is created, and stored with it
//   (conversations.home_dc; copied by the sync service with the messages):
//   - a 1:1 conversation is homed by a hash of its id over the datacenters'
//     names (directHome), so both members' datacenters agree on it without
//     asking each other, even before it exists;
//   - a group is homed where it was created (the datacenter of the process
//     that handled its create).
// - A conversation another datacenter has not copied here yet is treated by
//   those rules: a 1:1 by the hash, an unknown group as local (its requests
//   are answered NOT_FOUND here until its creation is copied).
import { directMembers } from '../protocol/ids.js';
import type { ReplicaStore } from '../engines/store.js';

/** FNV-1a over UTF-16 code units: the same number in every process and version. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The home of a 1:1 conversation: its id's hash over the datacenters' names, sorted. */
export function directHome(conversationId: string, dcs: readonly string[]): string {
  const sorted = [...dcs].sort();
  return sorted[hash(conversationId) % sorted.length]!;
}

/** Homes known here, kept at most this many (homes change only by takeover, which is not cached here). */
const KEPT = 100_000;

export class Homes {
  private readonly known = new Map<string, string>();
  readonly dcs: readonly string[];

  constructor(
    /** This datacenter. */
    readonly dc: string,
    peers: readonly string[],
    private readonly store: Pick<ReplicaStore, 'heads'>,
  ) {
    this.dcs = [dc, ...peers];
  }

  /** The home of each partition that is a conversation (a user's partition has none: absent). */
  async homesOf(partitions: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const unknown: string[] = [];
    for (const p of new Set(partitions)) {
      const home = this.known.get(p);
      if (home !== undefined) out.set(p, home);
      else if (p.startsWith('u:') || p.startsWith('g:')) unknown.push(p);
    }
    if (unknown.length === 0) return out;
    const heads = await this.store.heads(unknown);
    for (const p of unknown) {
      const head = heads.get(p);
      if (head) {
        const home = head.homeDc === '' ? this.dc : head.homeDc;
        this.remember(p, home);
        out.set(p, home);
      } else if (directMembers(p)) {
        const home = directHome(p, this.dcs);
        this.remember(p, home);
        out.set(p, home);
      } else {
        out.set(p, this.dc); // a group not copied here (yet): its create is handled here, or it is NOT_FOUND here
      }
    }
    return out;
  }

  /** The home of one conversation as this datacenter names it ('' in the store is this one). */
  async homeOf(conversationId: string): Promise<string> {
    return (await this.homesOf([conversationId])).get(conversationId) ?? this.dc;
  }

  private remember(conversationId: string, home: string): void {
    if (this.known.size >= KEPT) this.known.delete(this.known.keys().next().value!);
    this.known.set(conversationId, home);
  }
}

// Watches: which gateways have a connection watching each user's presence
// (PresenceSubscribe). Written by gateways as their connections start and
// stop watching (a gateway names a user once, however many of its
// connections watch it), read by logic when a user's presence changes, so the
// change goes only to those gateways instead of to every one.
//
// Contract (test/engines/watches.contract.ts):
// - set(node, users, true) adds node to each user's watchers; set(…, false)
//   takes it out; calls of one caller are applied in call order.
// - watchers(user) names every node set watching it and not taken out since.
// - replace(node, users) leaves node watching exactly `users`.
// - dropNode(node) takes the node out of every user's watchers (it stopped,
//   or died: the reaper drops what a dead gateway left).
// - nodes() names every node that may hold watches (a superset is allowed).

export interface Watches {
  set(node: string, userIds: readonly string[], watching: boolean): Promise<void>;
  /** The nodes watching this user. */
  watchers(userId: string): Promise<string[]>;
  replace(node: string, userIds: readonly string[]): Promise<void>;
  /** Returns how many users the node watched. */
  dropNode(node: string): Promise<number>;
  nodes(): Promise<string[]>;
  close(): Promise<void>;
}

/** In one process (the embedded server, tests). */
export class MemoryWatches implements Watches {
  private readonly byUser = new Map<string, Set<string>>();
  private readonly byNode = new Map<string, Set<string>>();

  async set(node: string, userIds: readonly string[], watching: boolean): Promise<void> {
    for (const u of userIds) {
      if (watching) {
        add(this.byUser, u, node);
        add(this.byNode, node, u);
      } else {
        remove(this.byUser, u, node);
        remove(this.byNode, node, u);
      }
    }
  }

  async watchers(userId: string): Promise<string[]> {
    return [...(this.byUser.get(userId) ?? [])];
  }

  async replace(node: string, userIds: readonly string[]): Promise<void> {
    await this.dropNode(node);
    await this.set(node, userIds, true);
  }

  async dropNode(node: string): Promise<number> {
    const users = this.byNode.get(node);
    if (!users) return 0;
    this.byNode.delete(node);
    for (const u of users) remove(this.byUser, u, node);
    return users.size;
  }

  async nodes(): Promise<string[]> {
    return [...this.byNode.keys()];
  }

  async close(): Promise<void> {}
}

function add(map: Map<string, Set<string>>, key: string, value: string): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(value);
}

function remove(map: Map<string, Set<string>>, key: string, value: string): void {
  const set = map.get(key);
  if (!set) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}

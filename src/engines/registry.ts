// Registry: the live nodes of the cluster, their roles, addresses and load.
// Every instance (gateways and each logic service: auth, message, group,
// storage, risk, push, or the combined logic) registers with a TTL and
// refreshes it (src/roles/announce.ts); entries not refreshed within the TTL
// are not live. `GET /api/v1/gateways` reads the gateways, least loaded
// first; `GET /api/v1/nodes` (admin) lists every live node.
//
// Contract (test/engines/registry.contract.ts).

/** Every role a node can announce (each has its own index in the Redis registry). */
export const NODE_ROLES = ['gateway', 'logic', 'auth', 'message', 'group', 'storage', 'risk', 'push', 'sync'] as const;

/**
 * What a process runs: `gateway` holds client connections; `logic` is the
 * combined logic (every service below in one process); the others are one
 * service each, run as separate processes.
 */
export type NodeRole = (typeof NODE_ROLES)[number];

export interface NodeInfo {
  id: string;
  role: NodeRole;
  /** Public addresses clients connect to, e.g. tcp://127.0.0.1:9000, ws://127.0.0.1:8080/ws. */
  tcpUrl?: string;
  wsUrl?: string;
  /**
   * Its HTTP address, e.g. http://10.0.0.5:8080: /metrics, /healthz and
   * /readyz on every role; the auth and logic roles serve the HTTP API there too.
   */
  httpUrl?: string;
  /**
   * What the instance serves, e.g. ['message', 'presence', 'push'] for a
   * message process; the combined logic lists all of them.
   */
  services?: string[];
  /** Current connection count (gateways). */
  load: number;
  startedAtMs: number;
}

export interface Registry {
  /**
   * Add or refresh a node; it stays live for ttlMs unless refreshed again.
   * Resolves true when the node was live before this call (a refresh), false
   * when it was not (a first announce, or its entry had lapsed or been lost).
   */
  announce(node: NodeInfo, ttlMs: number): Promise<boolean>;
  remove(id: string): Promise<void>;
  /** Live nodes of a role, least loaded first. */
  live(role: NodeRole): Promise<NodeInfo[]>;
  /** Every live node of every role, by role name, then id (see byRoleThenId). */
  all(): Promise<NodeInfo[]>;
  close(): Promise<void>;
}

/** The order of Registry.all() and `GET /api/v1/nodes`: by role name, then id (code-unit order, the same in every process). */
export function byRoleThenId(a: NodeInfo, b: NodeInfo): number {
  if (a.role !== b.role) return a.role < b.role ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** A copy of a node that shares nothing with it (its services list included). */
export function copyNode(n: NodeInfo): NodeInfo {
  return n.services === undefined ? { ...n } : { ...n, services: [...n.services] };
}

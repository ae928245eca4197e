// Registry: the live nodes of the cluster, their public addresses and load.
// Gateways register with a TTL and refresh it; entries not refreshed within
// the TTL are not live. `GET /api/v1/gateways` reads it, least loaded first.
//
// Contract (test/engines/registry.contract.ts).

export type NodeRole = 'gateway' | 'logic';

export interface NodeInfo {
  id: string;
  role: NodeRole;
  /** Public addresses clients connect to, e.g. tcp://127.0.0.1:9000, ws://127.0.0.1:8080/ws. */
  tcpUrl?: string;
  wsUrl?: string;
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
  close(): Promise<void>;
}

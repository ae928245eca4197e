// In-process registry for a single node.
import { byRoleThenId, copyNode, type NodeInfo, type NodeRole, type Registry } from './registry.js';

export class MemoryRegistry implements Registry {
  private readonly nodes = new Map<string, { info: NodeInfo; expiresAtMs: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  async announce(node: NodeInfo, ttlMs: number): Promise<boolean> {
    const now = this.now();
    const before = this.nodes.get(node.id);
    this.nodes.set(node.id, { info: copyNode(node), expiresAtMs: now + ttlMs });
    return before !== undefined && before.expiresAtMs > now;
  }

  async remove(id: string): Promise<void> {
    this.nodes.delete(id);
  }

  async live(role: NodeRole): Promise<NodeInfo[]> {
    return this.liveWhere((n) => n.role === role).sort((a, b) => a.load - b.load || a.id.localeCompare(b.id));
  }

  async all(): Promise<NodeInfo[]> {
    return this.liveWhere(() => true).sort(byRoleThenId);
  }

  /** Copies of the live nodes that match; expired entries are dropped on the way. */
  private liveWhere(match: (n: NodeInfo) => boolean): NodeInfo[] {
    const now = this.now();
    const out: NodeInfo[] = [];
    for (const [id, entry] of this.nodes) {
      if (entry.expiresAtMs <= now) this.nodes.delete(id);
      else if (match(entry.info)) out.push(copyNode(entry.info));
    }
    return out;
  }

  async close(): Promise<void> {
    this.nodes.clear();
  }
}

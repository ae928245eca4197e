// In-process registry for a single node.
import type { NodeInfo, NodeRole, Registry } from './registry.js';

export class MemoryRegistry implements Registry {
  private readonly nodes = new Map<string, { info: NodeInfo; expiresAtMs: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  async announce(node: NodeInfo, ttlMs: number): Promise<boolean> {
    const now = this.now();
    const before = this.nodes.get(node.id);
    this.nodes.set(node.id, { info: { ...node }, expiresAtMs: now + ttlMs });
    return before !== undefined && before.expiresAtMs > now;
  }

  async remove(id: string): Promise<void> {
    this.nodes.delete(id);
  }

  async live(role: NodeRole): Promise<NodeInfo[]> {
    const now = this.now();
    const out: NodeInfo[] = [];
    for (const [id, entry] of this.nodes) {
      if (entry.expiresAtMs <= now) this.nodes.delete(id);
      else if (entry.info.role === role) out.push({ ...entry.info });
    }
    return out.sort((a, b) => a.load - b.load || a.id.localeCompare(b.id));
  }

  async close(): Promise<void> {
    this.nodes.clear();
  }
}

// In-process session table for a single node.
import type { BindResult, SessionInfo, Sessions } from './sessions.js';

export class MemorySessions implements Sessions {
  private readonly byUser = new Map<string, Map<string, SessionInfo>>();
  /** user → (device or '*' for every device) → revocation time and when to forget it. */
  private readonly revoked = new Map<string, Map<string, { beforeMs: number; untilMs: number }>>();

  async bind(session: SessionInfo): Promise<SessionInfo | undefined> {
    let devices = this.byUser.get(session.userId);
    if (!devices) {
      devices = new Map();
      this.byUser.set(session.userId, devices);
    }
    const previous = devices.get(session.deviceId);
    devices.set(session.deviceId, { ...session });
    return previous;
  }

  async bindUnlessRevoked(session: SessionInfo, issuedAtMs: number): Promise<BindResult> {
    const revokedBeforeMs = await this.revokedBefore(session.userId, session.deviceId);
    if (issuedAtMs <= revokedBeforeMs) return { bound: false, revokedBeforeMs };
    const previous = await this.bind(session);
    return { bound: true, previous, sessions: [...this.byUser.get(session.userId)!.values()].map((s) => ({ ...s })) };
  }

  async unbind(userId: string, deviceId: string, node: string, connId: number): Promise<boolean> {
    const devices = this.byUser.get(userId);
    const current = devices?.get(deviceId);
    if (!devices || !current || current.node !== node || current.connId !== connId) return false;
    devices.delete(deviceId);
    if (devices.size === 0) this.byUser.delete(userId);
    return true;
  }

  async lookup(userIds: readonly string[]): Promise<Map<string, SessionInfo[]>> {
    const out = new Map<string, SessionInfo[]>();
    for (const userId of userIds) {
      const devices = this.byUser.get(userId);
      if (devices && devices.size > 0) out.set(userId, [...devices.values()].map((s) => ({ ...s })));
    }
    return out;
  }

  async revoke(userId: string, deviceId: string | undefined, beforeMs: number, ttlMs: number): Promise<void> {
    let entries = this.revoked.get(userId);
    if (!entries) {
      entries = new Map();
      this.revoked.set(userId, entries);
    }
    const key = deviceId ?? '*';
    const old = entries.get(key);
    entries.set(key, {
      beforeMs: Math.max(old?.beforeMs ?? 0, beforeMs),
      untilMs: Math.max(old?.untilMs ?? 0, Date.now() + ttlMs),
    });
  }

  async revokedBefore(userId: string, deviceId: string): Promise<number> {
    const entries = this.revoked.get(userId);
    if (!entries) return 0;
    const now = Date.now();
    let before = 0;
    for (const key of ['*', deviceId]) {
      const entry = entries.get(key);
      if (!entry) continue;
      if (entry.untilMs <= now) entries.delete(key);
      else before = Math.max(before, entry.beforeMs);
    }
    if (entries.size === 0) this.revoked.delete(userId);
    return before;
  }

  async nodes(): Promise<string[]> {
    const out = new Set<string>();
    for (const devices of this.byUser.values()) for (const s of devices.values()) out.add(s.node);
    return [...out].sort();
  }

  async dropNode(node: string): Promise<number> {
    let dropped = 0;
    for (const [userId, devices] of this.byUser) {
      for (const [deviceId, s] of devices) {
        if (s.node === node) {
          devices.delete(deviceId);
          dropped++;
        }
      }
      if (devices.size === 0) this.byUser.delete(userId);
    }
    return dropped;
  }

  async close(): Promise<void> {
    this.byUser.clear();
    this.revoked.clear();
  }
}

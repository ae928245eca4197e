// Sessions: which gateway node holds each device of each user. Written by
// gateways at login and logout, read by logic to route pushes.
//
// Contract (test/engines/sessions.contract.ts):
// - bind() replaces any session of the same (user, device) and returns it, so
//   the caller can kick the old connection wherever it is.
// - unbind() removes a session only if it still belongs to that connection
//   (a late logout of a replaced connection must not remove its successor).
// - dropNode() removes every session of a node (the node died).
// - revoke() records that tokens of a user (every device, or one) issued at or
//   before a time are no longer good; revokedBefore() returns the latest such
//   time that applies to a device (0: none). A revocation is kept at least ttlMs
//   (the longest token lifetime: older tokens have expired anyway) and never
//   moves back in time.
// - bindUnlessRevoked() is bind() and the revocation check in one atomic step:
//   it binds only if no revocation covers a token issued at `issuedAtMs`, and
//   then returns the user's sessions (the new one included). A revocation is
//   either seen by it or written after the bind (and then announced to the
//   gateways, which kick the connection): none slips between check and bind.
// - nodes() names every node that may hold sessions (a superset is allowed:
//   a node whose sessions all logged out may stay listed until dropNode()),
//   so a reaper can find nodes that died without unbinding.

export interface SessionInfo {
  userId: string;
  deviceId: string;
  platform: string;
  node: string;
  connId: number;
  loginAtMs: number;
}

/** What bindUnlessRevoked did. */
export type BindResult =
  | { bound: true; previous: SessionInfo | undefined; sessions: SessionInfo[] }
  | { bound: false; revokedBeforeMs: number };

export interface Sessions {
  bind(session: SessionInfo): Promise<SessionInfo | undefined>;
  /** Bind, unless a revocation covers a token of this device issued at `issuedAtMs`; one atomic step. */
  bindUnlessRevoked(session: SessionInfo, issuedAtMs: number): Promise<BindResult>;
  unbind(userId: string, deviceId: string, node: string, connId: number): Promise<boolean>;
  /** Every online device of each user (users with none are absent). */
  lookup(userIds: readonly string[]): Promise<Map<string, SessionInfo[]>>;
  dropNode(node: string): Promise<number>;
  /** Tokens of the user (deviceId undefined: every device) issued at or before `beforeMs` are revoked; kept at least ttlMs. */
  revoke(userId: string, deviceId: string | undefined, beforeMs: number, ttlMs: number): Promise<void>;
  /** The latest revocation time that applies to this device (its own or its user's), 0 when none. */
  revokedBefore(userId: string, deviceId: string): Promise<number>;
  /** Nodes that may hold sessions; a node is no longer listed after dropNode() unless it binds again. */
  nodes(): Promise<string[]>;
  close(): Promise<void>;
}

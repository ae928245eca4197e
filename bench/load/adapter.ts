// What the load generator needs from a system under test: connect a user,
// send a payload to a user or a group and hear the ack, receive payloads.
// One adapter per system (Longlink over TCP or WebSocket, and the baselines:
// a raw `ws` relay, a raw `net` relay, Socket.IO), so every scenario drives
// them all with the same code and counts them with the same ledger.

export type SystemName = 'longlink' | 'raw-ws' | 'raw-net' | 'socketio';

export interface ConnEvents {
  /** The server accepted send number `msgId` of this connection (Longlink: after it is stored). */
  onAck(msgId: number): void;
  /** A payload sent by someone else arrived on this connection. */
  onDeliver(payload: string): void;
  /** The server refused send number `msgId` (Longlink: an Error frame with this code). */
  onRefused?(msgId: number, code: string): void;
  /** The connection closed without close() being called. */
  onDrop(reason: string): void;
}

export interface BenchConn {
  /** Send `payload` to a user id (1:1) or a group id (fan-out); `msgId` comes back in onAck. */
  send(to: string, msgId: number, payload: string, group: boolean): void;
  /** An application heartbeat (Longlink: Ping; baselines: a 1-byte ping answered by the server). */
  ping(): void;
  close(): void;
}

export interface ConnectTarget {
  /** tcp://host:port or ws://host:port/path or http://host:port (Socket.IO). */
  url: string;
  /** Longlink: a login token for this user; baselines ignore it. */
  token?: string;
}

export interface Adapter {
  /** Open a connection as `user` and resolve once the server has accepted the login. */
  connect(target: ConnectTarget, user: string, events: ConnEvents): Promise<BenchConn>;
  /** Join a group's fan-out (baselines: the server's group list or room; Longlink: no-op, membership is server-side). */
  join?(conn: BenchConn, group: string): Promise<void>;
}

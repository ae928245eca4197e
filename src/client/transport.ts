// What the client needs from a connection: bytes of whole frames in and out.
// The Node entry provides TCP, TLS and WebSocket (ws); a browser entry provides
// the browser's WebSocket.

export interface ClientConnection {
  send(frame: Uint8Array): void;
  close(): void;
}

export interface ConnectionEvents {
  onFrame(frame: Uint8Array): void;
  onClose(reason: string): void;
}

/**
 * Opens a connection to a gateway URL (tcp:// or tls://host:port, ws:// or
 * wss://host:port/ws); rejects, best with a LonglinkError, when it cannot.
 */
export type Connector = (url: string, events: ConnectionEvents) => Promise<ClientConnection>;

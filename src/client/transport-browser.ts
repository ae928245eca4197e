// The browser connector: the browser's own WebSocket, one binary message per frame.
import type { ClientConnection, ConnectionEvents, Connector } from './transport.js';

export const browserConnector: Connector = (url: string, events: ConnectionEvents) => {
  if (!/^wss?:\/\//.test(url)) return Promise.reject(new Error(`a browser connects with ws:// or wss://, not ${url}`));
  return new Promise<ClientConnection>((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    let open = false;
    ws.onopen = () => {
      open = true;
      resolve({
        send: (frame) => {
          if (ws.readyState === WebSocket.OPEN) ws.send(frame);
        },
        close: () => ws.close(1000),
      });
    };
    ws.onmessage = (e: MessageEvent) => {
      if (e.data instanceof ArrayBuffer) events.onFrame(new Uint8Array(e.data));
    };
    ws.onerror = () => {
      if (!open) reject(new Error(`cannot connect to ${url}`));
    };
    ws.onclose = (e: { code: number }) => {
      if (open) events.onClose(`connection closed (${e.code})`);
      else reject(new Error(`cannot connect to ${url} (${e.code})`));
    };
  });
};

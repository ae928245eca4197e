// `longlink/client` for Node: the client with TCP, TLS and WebSocket connectors.
import { LonglinkClient, type ClientOptions } from './client.js';
import { createNodeConnector, nodeConnector, type NodeTlsOptions } from './transport-node.js';

export * from './common.js';
export { fileStore, type FileStoreOptions } from './store-file.js';
export { nodeConnector, createNodeConnector, type NodeTlsOptions, type PemInput } from './transport-node.js';
export { nodeFetch } from './fetch-node.js';

export interface NodeClientOptions extends Omit<ClientOptions, 'connector'> {
  /** @default nodeConnector, or one trusting `ca` when given */
  connector?: ClientOptions['connector'];
  /**
   * CAs (PEM) to verify tls:// and wss:// gateways against instead of Node's
   * default roots, for a private deployment (ignored when `connector` is given).
   * The API calls (`requestToken`, `gatewayPicker`) take `{ fetch: nodeFetch({ ca }) }`.
   */
  ca?: NodeTlsOptions['ca'];
}

/** A client for Node: TCP, TLS or WebSocket chosen by the URL scheme (tcp://, tls://, ws://, wss://). */
export function createClient(options: NodeClientOptions): LonglinkClient {
  const { ca, ...rest } = options;
  return new LonglinkClient({ connector: ca === undefined ? nodeConnector : createNodeConnector({ ca }), ...rest });
}

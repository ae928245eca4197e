// `longlink/client` for Node: the client with TCP and WebSocket connectors.
import { LonglinkClient, type ClientOptions } from './client.js';
import { nodeConnector } from './transport-node.js';

export * from './common.js';
export { fileStore, type FileStoreOptions } from './store-file.js';
export { nodeConnector } from './transport-node.js';

/** A client for Node: TCP or WebSocket chosen by the URL scheme. */
export function createClient(options: Omit<ClientOptions, 'connector'> & { connector?: ClientOptions['connector'] }): LonglinkClient {
  return new LonglinkClient({ connector: nodeConnector, ...options });
}

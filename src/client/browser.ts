// `longlink/client` in browsers (chosen by the package's "browser" export
// condition): the same client, connecting with the browser's WebSocket.
import { LonglinkClient, type ClientOptions } from './client.js';
import { browserConnector } from './transport-browser.js';

export * from './common.js';
export { indexedDbStore, type IndexedDbStoreOptions } from './store-indexeddb.js';
export { browserConnector } from './transport-browser.js';

/** A client for browsers: WebSocket gateways (ws:// or wss://). */
export function createClient(options: Omit<ClientOptions, 'connector'> & { connector?: ClientOptions['connector'] }): LonglinkClient {
  return new LonglinkClient({ connector: browserConnector, ...options });
}

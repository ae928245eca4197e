// `longlink/client` in browsers (chosen by the package's "browser" export
// condition): the same client, connecting with the browser's WebSocket.
import { LonglinkClient, type ClientOptions } from './client.js';
import { browserConnector } from './transport-browser.js';

export * from './client.js';
export type {
  ConversationInfo, GroupInfo, PresenceInfo, ReceiptInfo, BroadcastInfo, TypingInfo, RecallInfo, GroupChange,
} from './types.js';
export {
  memoryStore, parseSnapshot, emptySnapshot, DebouncedWriter, type ClientStore, type ClientSnapshot, type StoredSend,
} from './store.js';
export { indexedDbStore, type IndexedDbStoreOptions } from './store-indexeddb.js';
export type { Connector, ClientConnection, ConnectionEvents } from './transport.js';
export { browserConnector } from './transport-browser.js';
export {
  LonglinkError, ErrorCode, errorName, directConversationId,
  type ChatMessage, type TimelineEventData, type GroupRoleName,
} from '../protocol/index.js';
export { requestToken, listGateways, gatewayPicker, type TokenResponse, type GatewayInfo } from './http.js';

/** A client for browsers: WebSocket gateways (ws:// or wss://). */
export function createClient(options: Omit<ClientOptions, 'connector'> & { connector?: ClientOptions['connector'] }): LonglinkClient {
  return new LonglinkClient({ connector: browserConnector, ...options });
}

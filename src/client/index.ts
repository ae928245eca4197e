// `longlink/client` for Node: the client with TCP and WebSocket connectors.
import { LonglinkClient, type ClientOptions } from './client.js';
import { nodeConnector } from './transport-node.js';

export * from './client.js';
export type {
  ConversationInfo, GroupInfo, PresenceInfo, ReceiptInfo, BroadcastInfo, TypingInfo, RecallInfo, GroupChange,
} from './types.js';
export {
  memoryStore, parseSnapshot, emptySnapshot, DebouncedWriter, type ClientStore, type ClientSnapshot, type StoredSend,
} from './store.js';
export { fileStore, type FileStoreOptions } from './store-file.js';
export type { Connector, ClientConnection, ConnectionEvents } from './transport.js';
export { nodeConnector } from './transport-node.js';
export {
  LonglinkError, ErrorCode, errorName, directConversationId,
  type ChatMessage, type TimelineEventData, type GroupRoleName,
} from '../protocol/index.js';
export { requestToken, listGateways, gatewayPicker, type TokenResponse, type GatewayInfo } from './http.js';

/** A client for Node: TCP or WebSocket chosen by the URL scheme. */
export function createClient(options: Omit<ClientOptions, 'connector'> & { connector?: ClientOptions['connector'] }): LonglinkClient {
  return new LonglinkClient({ connector: nodeConnector, ...options });
}

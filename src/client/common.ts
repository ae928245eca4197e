// What both entries of `longlink/client` export (index.ts for Node, browser.ts
// for browsers); each adds its connector, its store and createClient.
export * from './client.js';
export type {
  ConversationInfo, DeliveryInfo, GroupInfo, PresenceInfo, ReceiptInfo, BroadcastInfo, TypingInfo, RecallInfo, EditInfo, ReactionsInfo, ProfileInfo, GroupChange,
} from './types.js';
export {
  memoryStore, parseSnapshot, emptySnapshot, DebouncedWriter, type ClientStore, type ClientSnapshot, type StoredSend,
} from './store.js';
export type { Connector, ClientConnection, ConnectionEvents } from './transport.js';
export { payloadJson, payloadText } from './content.js';
export {
  LonglinkError, ErrorCode, errorName, directConversationId, directMembers, groupConversationId, groupIdOf, isGroupConversation, isValidId,
  type ChatMessage, type TimelineEventData, type GroupRoleName, type ContentData, type QuoteData, type ForwardData, type ReactionData, type AttachmentData,
} from '../protocol/index.js';
export { uploadFile, downloadFile, type FileInfo, type UploadOptions } from './files.js';
export {
  requestToken, listGateways, discover, gatewayPicker, HttpApiError, type TokenResponse, type GatewayInfo, type Discovery, type HttpOptions, type HttpFetch,
} from './http.js';

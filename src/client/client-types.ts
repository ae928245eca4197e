// The client's public types: its options, what a send returns, the connection
// states a UI shows, and its events. client.ts re-exports them (the SDK's
// entries export client.ts); the modules of the client share them from here.
import type { ChatMessage, LonglinkError } from '../protocol/index.js';
import type {
  BroadcastInfo, DeliveryInfo, EditInfo, GroupChange, ReactionsInfo, PresenceInfo, ReceiptInfo, RecallInfo, TypingInfo,
} from './types.js';
import type { ClientStore, StoredSend } from './store.js';
import type { Connector } from './transport.js';

/**
 * What a UI shows about the connection:
 * - `idle`: never connected;
 * - `connecting`: the first connect (`connect()`) is in progress;
 * - `online`: logged in; sends go out at once;
 * - `reconnecting`: the connection was lost; the client waits `retryInMs`
 *   (see `StateDetail` and `nextRetryAtMs`) and tries again, then stays
 *   `reconnecting` while that attempt is in progress;
 * - `offline`: not connected and not trying (closed, refused, or the first connect failed).
 */
export type ClientState = 'idle' | 'connecting' | 'online' | 'reconnecting' | 'offline';

/** Detail of a 'state' event. */
export interface StateDetail {
  /** `reconnecting`: the next attempt starts in this many ms (full jitter under the backoff cap). */
  retryInMs?: number;
  /** `reconnecting`: when the next attempt starts (ms since the epoch, `Date.now()` clock). */
  retryAtMs?: number;
  /** `reconnecting`: which retry this is since the connection was lost (1 = the first). */
  attempt?: number;
  /** `reconnecting` / `offline`: why the connection was lost, the last attempt failed, or the client stopped. */
  reason?: string;
}

export interface ClientOptions {
  /**
   * Gateway URL (tcp:// or tls://host:port, ws:// or wss://host:port/ws), or a function that
   * picks one on every (re)connect, told which URL just failed or was lost so
   * it can choose another gateway (see `gatewayPicker`).
   */
  url: string | ((avoid: string | undefined) => Promise<string>);
  /** A login token, or a function that gets a fresh one (called on every (re)connect). */
  token: string | (() => Promise<string>);
  connector: Connector;
  /** Reconnect after losing the connection. @default true */
  reconnect?: boolean;
  /** First reconnect delay cap, doubled per attempt up to maxBackoffMs (full jitter). @default 500 */
  initialBackoffMs?: number;
  /** @default 30000 */
  maxBackoffMs?: number;
  /** Resend a send not acked within this time on the same connection. @default 10000 */
  resendAfterMs?: number;
  /** Delay before a cumulative PushAck, to ack many messages at once. @default 30 */
  ackDelayMs?: number;
  /** Timeout of login, sync and history requests. @default 15000 */
  requestTimeoutMs?: number;
  clientVersion?: string;
  /** Run a full sync after every login. Off for send-only tools. @default true */
  autoSync?: boolean;
  /**
   * Where cursors and unacked sends are kept between runs: `fileStore(path)`
   * in Node, `indexedDbStore(name)` in browsers, or your own `ClientStore`.
   * One client per store at a time. @default memoryStore() (nothing outlives the client object)
   */
  store?: ClientStore;
  /**
   * The HTTP API (http(s)://host:port), for files (uploadFile, downloadFile).
   * @default the gateway URL's host and port when it is ws:// or wss://
   */
  apiUrl?: string;
}

export interface SendOptions {
  /** One of: a user (1:1), a group, or a conversation id. */
  to?: string;
  groupId?: string;
  conversationId?: string;
  /** The text (may be empty with a `type` or a `forward`; give a custom message a fallback text for clients that show only text). */
  text?: string;
  /** Idempotency key; generated when absent. */
  clientMsgId?: string;
  /** A custom content type chosen by your product ("app.order"): 1-64 letters, digits and . _ / + - */
  type?: string;
  /** The custom payload, delivered as is: bytes, a string, or a value sent as JSON (needs `type`). */
  payload?: Uint8Array | string | Record<string, unknown> | unknown[];
  /** Users to mention. */
  mentions?: string[];
  /** Groups: mention everyone (owner and admins only). */
  mentionAll?: boolean;
  /** Reply to this seq of the same conversation (messages carry the quote in `reply`). */
  replyTo?: number;
  /** Forward this message (its text and content are copied; give no text or type). */
  forward?: { conversationId: string; seq: number };
  /** Files to send (at most 10): the ids uploadFile gave, or what it returned. The text may be empty. */
  attachments?: (string | { fileId: string })[];
}

/** One search result: the message as history gives it, and the matched words in context (each between [ and ]). */
export interface SearchHit {
  message: ChatMessage;
  snippet: string;
}

/** What an edit may change: the text, the custom type and payload, the mentions. */
export interface EditOptions {
  text?: string;
  type?: string;
  payload?: SendOptions['payload'];
  mentions?: string[];
  mentionAll?: boolean;
}

export interface SendResult {
  clientMsgId: string;
  serverMsgId: string;
  conversationId: string;
  seq: number;
  sentAtMs: number;
  duplicate: boolean;
  /** The text as stored, when the server changed it (masked by its content rules, or replaced by the business): what the others see. */
  text?: string;
}

/**
 * A send the server has not acked yet. Sends of an earlier run (or of this
 * client before `close()`) are loaded from the store by `restore()` (called
 * by `connect()`): no `send()` promise waits for those, so the app learns
 * their fate from the 'sent' and 'failed' events.
 */
export interface PendingSend extends StoredSend {
  /** Loaded from the store rather than made by `send()` on this client since it was loaded. */
  restored: boolean;
}

export interface LoginInfo {
  userId: string;
  deviceId: string;
  platform: string;
  nodeId: string;
  pingIntervalMs: number;
  /** The largest file this server takes in an upload (bytes); 0 when it does not say. */
  maxFileBytes: number;
}

export interface ClientEvents {
  /** A message from someone else (or this user's other device), once, in seq order per conversation. */
  message: (message: ChatMessage) => void;
  /** The connection state changed, or (reconnecting) a new retry was scheduled. */
  state: (state: ClientState, detail: StateDetail) => void;
  login: (info: LoginInfo) => void;
  /**
   * Unacked sends loaded from the store (made by an earlier run): they are
   * pending again and go out at the next login with their client_msg_id, so
   * the server stores each once. Their outcome comes as 'sent' or 'failed'.
   */
  restored: (sends: PendingSend[]) => void;
  /** A send was stored by the server: every send, restored or made by `send()` (whose promise resolves too). */
  sent: (result: SendResult, send: PendingSend) => void;
  /**
   * The server refused a send for good (e.g. FORBIDDEN, TEXT_TOO_LARGE): it is
   * not stored and leaves the outbox; `send()`'s promise rejects with the same error.
   */
  failed: (error: LonglinkError, send: PendingSend) => void;
  /** The server closed this session on purpose (e.g. REPLACED by a login of the same device). */
  kick: (error: LonglinkError, reconnect: boolean) => void;
  /** An error the server reported that no request was waiting for. */
  error: (error: LonglinkError) => void;
  /** A full sync finished: everything missed while offline was delivered. */
  synced: () => void;
  /** Someone (or this user on another device) read a conversation up to seq. */
  receipt: (receipt: ReceiptInfo) => void;
  /** 1:1: the other user's devices have received this conversation up to seq (their delivered mark moved). */
  delivered: (delivery: DeliveryInfo) => void;
  typing: (typing: TypingInfo) => void;
  /** A watched user came online, went offline, or changed platforms. */
  presence: (presence: PresenceInfo) => void;
  /** A message was recalled (its text is gone); also delivered as a 'message' with event type 'recalled'. */
  recall: (recall: RecallInfo) => void;
  /** A message was edited (show the new version); also delivered as a 'message' with event type 'edited'. */
  edit: (edit: EditInfo) => void;
  /** A message was deleted for everyone (show a tombstone); also delivered as a 'message' with event type 'deleted'. */
  delete: (deletion: RecallInfo) => void;
  /**
   * This user deleted a message for itself (on any of its devices): stop showing it. Also delivered as a 'message'
   * of the user's note-to-self conversation with event type 'hidden'.
   */
  hide: (hidden: { conversationId: string; seq: number }) => void;
  /** A message's reactions changed (gathered: a few events a second at most per message); messages read later carry them in `reactions`. */
  reactions: (reactions: ReactionsInfo) => void;
  /** A group changed (created, members added or removed, left, roles, mutes, dismissed); also delivered as a 'message' with its event. */
  group: (change: GroupChange) => void;
  /** A system announcement. */
  broadcast: (broadcast: BroadcastInfo) => void;
}

/** The options with their defaults filled in. */
export type ResolvedOptions = Required<Omit<ClientOptions, 'clientVersion' | 'apiUrl'>> & { clientVersion: string; apiUrl?: string };

/** The client's `emit`, handed to the modules that raise its events. */
export type Emit = <K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>) => void;

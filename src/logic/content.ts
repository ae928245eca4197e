// A message's content beyond its text (Content on the wire): what a send or an
// edit may carry, checked before it is stored, and the quotes of replies,
// filled in when messages are pushed or read.
//
// - A custom payload: a content type the business names, and bytes delivered
//   as they are (JSON text or anything else), at most maxPayloadBytes.
// - Mentions: users (at most MAX_MENTIONS), or everyone in a group (its owner
//   and admins only). The store indexes them for ConversationSummary.mentioned.
// - A reply: an earlier seq of the same conversation the sender may see. The
//   quote shows that message as it is when read: recalled, deleted or expired
//   messages are quoted as gone, an edited one by its latest text.
// - A forward: a message of any conversation the sender may see, copied (text,
//   type, payload, attachments; not its mentions or reply) with where it came from.
// - Attachments: files uploaded with POST /api/v1/files (at most
//   MAX_ATTACHMENTS), each one the sender uploaded or may download; what the
//   message carries of them (name, type, size, dimensions) is the upload's
//   record, whatever the send said. An edit keeps a message's attachments.
import {
  ErrorCode, LonglinkError, MAX_ATTACHMENTS, QUOTE_CHARS, isGroupConversation, isValidId,
  type AttachmentData, type ChatMessage, type ContentData, type QuoteData,
} from '../protocol/index.js';
import type { Store } from '../engines/store.js';
import { requireView } from './access.js';

/** Users one message may mention. */
export const MAX_MENTIONS = 50;
/** A file id, as uploads make them. */
const FILE_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** A custom content type: 1-64 of these characters. */
const CONTENT_TYPE = /^[A-Za-z0-9._/+-]{1,64}$/;

/**
 * What a send's content must be whatever the store holds (throws
 * LonglinkError): a valid type, a payload only with a type and within the
 * limit, valid mentions, `mentionAll` only in a group, and a forward alone.
 */
export function checkContent(c: ContentData | undefined, text: string, conversationId: string, maxPayloadBytes: number, edit = false): void {
  if (!c) return;
  if (c.type !== undefined && !CONTENT_TYPE.test(c.type)) {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, 'content type must be 1-64 characters of letters, digits and . _ / + -');
  }
  if (c.payload !== undefined) {
    if (c.type === undefined) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'a payload needs a content type');
    if (c.payload.length > maxPayloadBytes) {
      throw new LonglinkError(ErrorCode.CONTENT_TOO_LARGE, `payload is ${c.payload.length} bytes; the limit is ${maxPayloadBytes}`);
    }
  }
  const mentions = c.mentions ?? [];
  if (mentions.length > MAX_MENTIONS) throw new LonglinkError(ErrorCode.CONTENT_TOO_LARGE, `at most ${MAX_MENTIONS} mentions a message`);
  if (mentions.some((u) => !isValidId(u))) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'a mention is not a valid user id');
  if (c.mentionAll && !isGroupConversation(conversationId)) {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, 'mention_all is for groups');
  }
  if (c.replyToSeq !== undefined && !(Number.isSafeInteger(c.replyToSeq) && c.replyToSeq > 0)) {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, 'reply_to_seq out of range');
  }
  if (edit && (c.replyToSeq !== undefined || c.forward !== undefined || c.attachments !== undefined)) {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, 'an edit keeps the message\'s reply, forward and attachments: leave them out');
  }
  const files = c.attachments ?? [];
  if (files.length > MAX_ATTACHMENTS) throw new LonglinkError(ErrorCode.CONTENT_TOO_LARGE, `at most ${MAX_ATTACHMENTS} attachments a message`);
  if (files.some((a) => !FILE_ID.test(a.fileId))) throw new LonglinkError(ErrorCode.BAD_REQUEST, 'an attachment needs a file_id');
  if (c.forward) {
    if (text !== '' || c.type !== undefined || c.payload !== undefined || c.replyToSeq !== undefined || c.attachments !== undefined) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, 'a forward copies its message: give no text, type, payload, attachments or reply with it');
    }
    if (!Number.isSafeInteger(c.forward.seq) || c.forward.seq <= 0 || c.forward.conversationId === '') {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, 'forward names a conversation and a seq');
    }
  }
}

/** Whether a message says anything: text, a custom type, a forward or a file. */
export function hasBody(text: string, c: ContentData | undefined): boolean {
  return text !== '' || c?.type !== undefined || c?.forward !== undefined || (c?.attachments?.length ?? 0) > 0;
}

/** A stored message as a quote (gone when nothing of it may be shown). */
export function quoteOf(seq: number, m: ChatMessage | undefined): QuoteData {
  if (!m || m.event || m.recalledBy !== undefined || m.deletedBy !== undefined) return { seq, fromUser: m?.fromUser ?? '', text: '', gone: true };
  const q: QuoteData = { seq, fromUser: m.fromUser, text: [...m.text].slice(0, QUOTE_CHARS).join('') };
  if (m.content?.type) q.type = m.content.type;
  return q;
}

/** A message the user may see now in a conversation, or a coded refusal (NOT_FOUND also for what it may not see). */
async function visibleMessage(store: Store, conversationId: string, seq: number, userId: string): Promise<ChatMessage> {
  const view = await requireView(store, conversationId, userId);
  const m = seq >= view.fromSeq && (view.toSeq === undefined || seq <= view.toSeq) ? await store.message(conversationId, seq) : undefined;
  if (!m || m.event || m.recalledBy !== undefined || m.deletedBy !== undefined) throw new LonglinkError(ErrorCode.NOT_FOUND, 'no such message');
  return m;
}

/**
 * A send's content resolved against the store: a forward becomes the copied
 * message (its text returned), a reply gets its quote, mention_all is checked
 * against the sender's rank. Returns the text and content to store and the quote.
 */
export async function resolveContent(
  store: Store, userId: string, conversationId: string, text: string, c: ContentData | undefined, trusted: boolean,
): Promise<{ text: string; content?: ContentData; reply?: QuoteData }> {
  if (!c) return { text };
  if (c.forward) {
    const source = await visibleMessage(store, c.forward.conversationId, c.forward.seq, userId);
    const content: ContentData = {
      forward: { conversationId: source.conversationId, seq: source.seq, fromUser: source.fromUser, sentAtMs: source.sentAtMs },
    };
    if (source.content?.type) content.type = source.content.type;
    if (source.content?.payload) content.payload = source.content.payload;
    if (source.content?.attachments) content.attachments = source.content.attachments;
    if (c.mentions) content.mentions = c.mentions;
    if (c.mentionAll) content.mentionAll = true;
    await checkMentionAll(store, conversationId, userId, content, trusted);
    return { text: source.text, content };
  }
  await checkMentionAll(store, conversationId, userId, c, trusted);
  if (c.attachments) c = { ...c, attachments: await resolveAttachments(store, userId, c.attachments) };
  if (c.replyToSeq === undefined) return { text, content: c };
  const target = await visibleMessage(store, conversationId, c.replyToSeq, userId).catch((err: unknown) => {
    if (err instanceof LonglinkError && err.code === ErrorCode.NOT_FOUND) throw new LonglinkError(ErrorCode.NOT_FOUND, 'reply_to_seq: no such message');
    throw err;
  });
  return { text, content: c, reply: quoteOf(c.replyToSeq, target) };
}

/** The upload's record of each file the sender may send (FILE_NOT_FOUND for any other). */
async function resolveAttachments(store: Store, userId: string, given: readonly AttachmentData[]): Promise<AttachmentData[]> {
  const ids = [...new Set(given.map((a) => a.fileId))];
  const files = await store.files(ids);
  for (const id of ids) {
    const f = files.get(id);
    if (!f || (f.ownerId !== userId && !await store.mayReadFile(userId, id))) {
      throw new LonglinkError(ErrorCode.FILE_NOT_FOUND, `no file ${id} you may send`);
    }
  }
  return ids.map((id) => {
    const f = files.get(id)!;
    return { fileId: f.id, name: f.name, mime: f.mime, size: f.size, width: f.width, height: f.height, hasPreview: f.hasPreview };
  });
}

async function checkMentionAll(store: Store, conversationId: string, userId: string, c: ContentData, trusted: boolean): Promise<void> {
  if (!c.mentionAll || trusted) return;
  const m = await store.membership(conversationId, userId);
  if (!m || m.leftSeq !== undefined || m.role === 'member') {
    throw new LonglinkError(ErrorCode.NOT_ADMIN, 'only the group\'s owner and admins may mention everyone');
  }
}

/** The seqs of a page's messages (not its timeline events), by conversation: what the per-conversation reads below ask for. */
export function seqsByConversation(messages: readonly { conversationId: string; seq: number; event?: unknown }[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const m of messages) {
    if (m.event) continue;
    const seqs = out.get(m.conversationId);
    if (seqs) seqs.push(m.seq);
    else out.set(m.conversationId, [m.seq]);
  }
  return out;
}

/** Replies read back get their quotes (one read per distinct quoted seq of the page); the messages are changed in place. */
export async function fillQuotes(store: Store, messages: ChatMessage[]): Promise<void> {
  const wanted = new Map<string, { conversationId: string; seq: number }>();
  for (const m of messages) {
    const seq = m.content?.replyToSeq;
    if (seq !== undefined && m.deletedBy === undefined) wanted.set(`${m.conversationId}\n${seq}`, { conversationId: m.conversationId, seq });
  }
  if (wanted.size === 0) return;
  const inPage = new Map(messages.map((m) => [`${m.conversationId}\n${m.seq}`, m]));
  const quotes = new Map<string, QuoteData>();
  await Promise.all([...wanted].map(async ([key, { conversationId, seq }]) => {
    quotes.set(key, quoteOf(seq, inPage.get(key) ?? await store.message(conversationId, seq)));
  }));
  for (const m of messages) {
    const seq = m.content?.replyToSeq;
    if (seq !== undefined && m.deletedBy === undefined) m.reply = quotes.get(`${m.conversationId}\n${seq}`)!;
  }
}

// A send's or an edit's content as the SDK takes it (SendOptions: type,
// payload, mentions, reply, forward, attachments), as the outbox stores it (plain JSON, the
// payload in base64) and as the wire carries it (Content); and helpers that
// read a received message's payload back.
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { ContentSchema } from '../protocol/index.js';
import type { ChatMessage } from '../protocol/index.js';
import type { StoredContent } from './store.js';
import type { EditOptions, SendOptions } from './client-types.js';

/** The content of these options as stored (undefined: plain text). */
export function storedContentOf(o: SendOptions | EditOptions): StoredContent | undefined {
  const out: StoredContent = {};
  if (o.type !== undefined) out.type = o.type;
  if (o.payload !== undefined) out.payload = toBase64(payloadBytes(o.payload));
  if (o.mentions !== undefined && o.mentions.length > 0) out.mentions = [...o.mentions];
  if (o.mentionAll) out.mentionAll = true;
  if ('replyTo' in o && o.replyTo !== undefined) out.replyTo = o.replyTo;
  if ('forward' in o && o.forward !== undefined) out.forward = { conversationId: o.forward.conversationId, seq: o.forward.seq };
  if ('attachments' in o && o.attachments !== undefined && o.attachments.length > 0) {
    out.attachments = o.attachments.map((a) => (typeof a === 'string' ? a : a.fileId));
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Stored content as the wire's Content. */
export function contentInit(c: StoredContent): MessageInitShape<typeof ContentSchema> {
  return {
    type: c.type ?? '',
    payload: c.payload !== undefined ? fromBase64(c.payload) : new Uint8Array(0),
    mentions: c.mentions ?? [],
    mentionAll: c.mentionAll ?? false,
    replyToSeq: BigInt(c.replyTo ?? 0),
    forward: c.forward ? { conversationId: c.forward.conversationId, seq: BigInt(c.forward.seq) } : undefined,
    attachments: (c.attachments ?? []).map((fileId) => ({ fileId })),
  };
}

/** A payload as bytes: bytes as they are, a string as UTF-8, anything else as JSON text. */
export function payloadBytes(p: NonNullable<SendOptions['payload']>): Uint8Array {
  if (p instanceof Uint8Array) return p;
  return new TextEncoder().encode(typeof p === 'string' ? p : JSON.stringify(p));
}

/** A received message's payload as text (UTF-8), or undefined without one. */
export function payloadText(m: ChatMessage): string | undefined {
  const p = m.content?.payload;
  return p ? new TextDecoder().decode(p) : undefined;
}

/** A received message's payload parsed as JSON, or undefined without one (throws on a payload that is not JSON). */
export function payloadJson<T = unknown>(m: ChatMessage): T | undefined {
  const text = payloadText(m);
  return text === undefined ? undefined : JSON.parse(text) as T;
}

function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

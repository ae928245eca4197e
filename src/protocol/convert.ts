// Wire ↔ domain. The wire carries int64 as bigint; the rest of Longlink uses
// plain numbers (seq and millisecond times stay far below 2^53).
import { create } from '@bufbuild/protobuf';
import { MessageSchema, CursorSchema, type Message, type Cursor } from './gen/longlink/v1/longlink_pb.js';

/** A stored message as the server and the client SDK see it. */
export interface ChatMessage {
  conversationId: string;
  seq: number;
  serverMsgId: string;
  fromUser: string;
  fromDevice: string;
  clientMsgId: string;
  text: string;
  sentAtMs: number;
}

export function messageToWire(m: ChatMessage): Message {
  return create(MessageSchema, {
    conversationId: m.conversationId,
    seq: BigInt(m.seq),
    serverMsgId: m.serverMsgId,
    fromUser: m.fromUser,
    fromDevice: m.fromDevice,
    clientMsgId: m.clientMsgId,
    text: m.text,
    sentAtMs: BigInt(m.sentAtMs),
  });
}

export function messageFromWire(m: Message): ChatMessage {
  return {
    conversationId: m.conversationId,
    seq: Number(m.seq),
    serverMsgId: m.serverMsgId,
    fromUser: m.fromUser,
    fromDevice: m.fromDevice,
    clientMsgId: m.clientMsgId,
    text: m.text,
    sentAtMs: Number(m.sentAtMs),
  };
}

export function cursorToWire(conversationId: string, seq: number): Cursor {
  return create(CursorSchema, { conversationId, seq: BigInt(seq) });
}

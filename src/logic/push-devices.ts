// What a user tells the server about its push notifications: a device's
// push token (PushRegister) and the conversations it muted (NotifySettings).
// The notifier (src/push/notifier.ts) reads both.
import { ErrorCode, LonglinkError, type BodyOf } from '../protocol/index.js';
import type { Origin } from '../engines/bus.js';
import type { PushPlatformName, Store } from '../engines/store.js';
import { requireView } from './access.js';

/** A user's registered devices: registering one more drops the least recently registered. */
export const MAX_PUSH_DEVICES = 10;
/** A push token's length, in characters. */
export const MAX_PUSH_TOKEN_CHARS = 4096;

const PLATFORMS: readonly PushPlatformName[] = ['apns', 'fcm', 'webhook'];

function platformOf(platform: string): PushPlatformName {
  if (!(PLATFORMS as readonly string[]).includes(platform)) {
    throw new LonglinkError(ErrorCode.BAD_REQUEST, `platform must be one of ${PLATFORMS.join(', ')}`);
  }
  return platform as PushPlatformName;
}

export class PushDevices {
  constructor(private readonly deps: { store: Store }) {}

  /** Register (or forget) the asking device's token. */
  async register(origin: Origin, req: BodyOf<'pushRegister'>): Promise<void> {
    if (req.remove) {
      await this.deps.store.removePushDevice(origin.userId, origin.deviceId, req.token === '' ? undefined : req.token);
      return;
    }
    const platform = platformOf(req.platform);
    // Printable ASCII: APNs tokens are hex, FCM's base64url with ':' and '-', a business's own anything printable.
    if (req.token.length === 0 || req.token.length > MAX_PUSH_TOKEN_CHARS || !/^[\x21-\x7e]+$/.test(req.token)) {
      throw new LonglinkError(ErrorCode.BAD_REQUEST, `token must be 1-${MAX_PUSH_TOKEN_CHARS} printable ASCII characters`);
    }
    await this.deps.store.putPushDevice({ userId: origin.userId, deviceId: origin.deviceId, platform, token: req.token, updatedAtMs: Date.now() }, MAX_PUSH_DEVICES);
  }

  /** Mute or unmute a conversation's notifications for the asking user (a conversation it may read). */
  async settings(origin: Origin, req: BodyOf<'notifySettings'>): Promise<void> {
    await requireView(this.deps.store, req.conversationId, origin.userId);
    await this.deps.store.setNotifyMuted(origin.userId, req.conversationId, req.muted);
  }
}

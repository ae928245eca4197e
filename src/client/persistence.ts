// Keeping the client's state in its store (see store.ts for the contract):
// loaded once before the first login (cursors seed the inbox, unacked sends
// rejoin the outbox), saved on every change (coalesced), written and flushed
// when the client goes offline for good. The snapshot says whose it is: a
// login as someone else drops it instead of sending under that identity.
import { ErrorCode, LonglinkError } from '../protocol/index.js';
import type { Emit, LoginInfo, PendingSend } from './client-types.js';
import type { Inbox } from './inbox.js';
import { describeError } from './net-errors.js';
import { pendingOf, type Outbox } from './outbox.js';
import type { ClientSnapshot, ClientStore } from './store.js';

/** What persistence needs of the rest of the client. */
export interface PersistenceHost {
  store: ClientStore;
  link: { readonly online: boolean };
  inbox: Pick<Inbox, 'cursors' | 'restoreCursor' | 'syncToken' | 'restoreSyncToken' | 'reset'>;
  outbox: Pick<Outbox, 'restore' | 'writeAll' | 'stored' | 'failWhere' | 'rejectWaiting' | 'clear'>;
  emit: Emit;
}

function storeError(what: string, err: unknown): LonglinkError {
  return new LonglinkError(ErrorCode.INTERNAL, `client store ${what} failed: ${describeError(err)}`);
}

export class Persistence {
  private restoring: Promise<PendingSend[]> | undefined;
  private isLoaded = false;
  private dirty = false;
  private persistTimer: ReturnType<typeof setTimeout> | undefined;
  /** putAway (close, or a final kick) writing the store: the next connect waits for it. */
  private putting: Promise<void> | undefined;
  /** Whom the stored state belongs to (from the store until a login says). */
  private owner: { userId: string; deviceId: string; fromStore: boolean } | undefined;

  constructor(private readonly host: PersistenceHost) {}

  /** Whether the store was loaded (since the client last went offline for good). */
  get loaded(): boolean {
    return this.isLoaded;
  }

  /** Settles when a putAway in progress is done. */
  get closing(): Promise<void> | undefined {
    return this.putting;
  }

  /** Load the store, once; see `LonglinkClient.restore`. */
  restore(): Promise<PendingSend[]> {
    this.restoring ??= this.load();
    return this.restoring;
  }

  /** Save soon (coalesced); before the store was loaded, only remember that something changed. */
  changed(): void {
    this.dirty = true;
    if (!this.isLoaded || this.persistTimer !== undefined) return;
    this.persistTimer = setTimeout(() => {
      this.persistTimer = undefined;
      void this.persist();
    }, 0);
  }

  /**
   * A login says whose session this is. State of another user or device
   * (stored, or of an earlier login of this client with another token) is not
   * theirs: its cursors are forgotten and its unacked sends fail (FORBIDDEN)
   * instead of going out under this identity.
   */
  adopt(info: LoginInfo): void {
    const owner = this.owner;
    this.owner = { userId: info.userId, deviceId: info.deviceId, fromStore: false };
    if (owner === undefined || (owner.userId === info.userId && owner.deviceId === info.deviceId)) {
      if (owner?.fromStore !== false) this.changed();
      return;
    }
    this.host.inbox.reset();
    const err = new LonglinkError(ErrorCode.FORBIDDEN, `queued by ${owner.userId}/${owner.deviceId}, not sent as ${info.userId}/${info.deviceId}`);
    // Stored sends were another identity's; so was everything queued under an earlier login of this client.
    this.host.outbox.failWhere((entry) => entry.restored || !owner.fromStore, err);
    this.changed();
  }

  /** Going offline for good, one putAway at a time (connect() waits for it); see `putAwayNow`. */
  putAway(reason: LonglinkError): Promise<void> {
    const run = (this.putting ?? Promise.resolve()).then(() => this.putAwayNow(reason));
    const tracked = run.finally(() => {
      if (this.putting === tracked) this.putting = undefined;
    });
    this.putting = tracked;
    return tracked;
  }

  private async load(): Promise<PendingSend[]> {
    let snapshot: ClientSnapshot | undefined;
    try {
      snapshot = await this.host.store.load();
    } catch (err) {
      this.host.emit('error', storeError('load', err));
    }
    let restored: ReturnType<Outbox['restore']> = [];
    if (snapshot) {
      const stored = snapshot.userId !== undefined && snapshot.deviceId !== undefined
        ? { userId: snapshot.userId, deviceId: snapshot.deviceId } : undefined;
      // This client logged in as someone else already: the stored state is not its to use (the next save replaces it).
      const foreign = stored !== undefined && this.owner !== undefined
        && (stored.userId !== this.owner.userId || stored.deviceId !== this.owner.deviceId);
      if (stored && !this.owner) this.owner = { ...stored, fromStore: true };
      if (!foreign) {
        for (const [id, seq] of Object.entries(snapshot.cursors)) this.host.inbox.restoreCursor(id, seq);
        if (snapshot.syncToken !== undefined) this.host.inbox.restoreSyncToken(snapshot.syncToken);
        restored = this.host.outbox.restore(snapshot.outbox);
      }
    }
    this.isLoaded = true;
    this.changed();
    if (this.host.link.online) this.host.outbox.writeAll(restored);
    const out = restored.map(pendingOf);
    if (out.length > 0) this.host.emit('restored', out);
    return out;
  }

  /** The state to keep: cursors delivered up to and the sync token that goes with them, unacked sends in order, and whose they are. */
  private snapshot(): ClientSnapshot {
    const s: ClientSnapshot = {
      version: 1,
      cursors: Object.fromEntries(this.host.inbox.cursors()),
      outbox: this.host.outbox.stored(),
    };
    const token = this.host.inbox.syncToken();
    if (token !== undefined) s.syncToken = token;
    if (this.owner) {
      s.userId = this.owner.userId;
      s.deviceId = this.owner.deviceId;
    }
    return s;
  }

  private async persist(): Promise<void> {
    if (!this.isLoaded || !this.dirty) return;
    this.dirty = false;
    try {
      await this.host.store.save(this.snapshot());
    } catch (err) {
      this.host.emit('error', storeError('save', err));
    }
  }

  /**
   * Going offline for good (close, or a kick that says not to reconnect): the
   * waiting promises reject with `reason`, the state is written and flushed,
   * and the outbox is left to the store (the next connect loads it again).
   */
  private async putAwayNow(reason: LonglinkError): Promise<void> {
    this.host.outbox.rejectWaiting(reason);
    if (this.restoring) await this.restoring;
    else if (this.dirty) await this.restore();
    clearTimeout(this.persistTimer);
    this.persistTimer = undefined;
    this.dirty = true;
    await this.persist();
    try {
      await this.host.store.flush();
    } catch (err) {
      this.host.emit('error', storeError('write', err));
    }
    this.host.outbox.clear();
    this.restoring = undefined;
    this.isLoaded = false;
    this.dirty = false;
  }
}

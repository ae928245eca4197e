// Keep this process's entry in the registry: announce it at once, then every
// ttlMs/3 (as the gateway does for itself, src/gateway/gateway.ts), so two
// refreshes can be lost before the entry lapses; on stop, take it out.
//
//   const entry = announce(registry, () => ({ id, role: 'message', services: ['message', 'presence', 'push'],
//     httpUrl, load: 0, startedAtMs }), config.nodeTtlMs);
//   …
//   await entry.stop();
//
// `info` is called for every announce, so the load (and anything else) is
// current. A failed announce is logged (warn, at most once every few seconds,
// with how many failed meanwhile) and tried again at the next tick; it never
// throws. Announces never overlap: a tick that finds the previous one still
// running is skipped. stop() waits for an announce in flight before removing
// the node, so a late refresh cannot put it back.
import type { NodeInfo, Registry } from '../engines/registry.js';
import { log as rootLog, type Log } from '../observability/log.js';

export interface AnnounceOptions {
  /** @default the shared logger, component 'announce' */
  logger?: Log;
  /** Least time between two warnings about failed announces. @default 5000 */
  warnEveryMs?: number;
  /** After each announce the registry accepted: whether the node was live before (see Registry.announce). */
  onAnnounced?: (wasLive: boolean) => void;
}

export interface Announcement {
  /** Resolves once the first announce was tried (accepted or not); never rejects. */
  readonly first: Promise<void>;
  /** Stop refreshing and remove the node from the registry (a failure to remove is logged, not thrown). Idempotent. */
  stop(): Promise<void>;
}

/** The refresh interval for a TTL: a third of it, at least 100 ms (as the gateway's). */
export function announceEveryMs(ttlMs: number): number {
  return Math.max(100, Math.floor(ttlMs / 3));
}

export function announce(registry: Registry, info: () => NodeInfo, ttlMs: number, options: AnnounceOptions = {}): Announcement {
  const logger = options.logger ?? rootLog.child({ component: 'announce' });
  const warnEveryMs = options.warnEveryMs ?? 5000;
  let stopped = false;
  let inFlight: Promise<void> | undefined;
  let lastId: string | undefined;
  /** Failed announces since the last one accepted (a recovery is logged once, with it). */
  let failedInARow = 0;
  /** Failures not warned about yet, and when the last warning was. */
  let unwarned = 0;
  let lastWarnMs = -Infinity;

  const once = async (): Promise<void> => {
    let wasLive: boolean;
    try {
      const node = info();
      lastId = node.id;
      wasLive = await registry.announce(node, ttlMs);
      if (failedInARow > 0) {
        logger.info({ node: node.id, failed: failedInARow }, 'registry announce works again');
        failedInARow = 0;
        unwarned = 0;
      }
    } catch (err) {
      failedInARow++;
      unwarned++;
      const now = Date.now();
      if (now - lastWarnMs >= warnEveryMs) {
        logger.warn({ err, node: lastId, failed: unwarned }, 'registry announce failed');
        lastWarnMs = now;
        unwarned = 0;
      }
      return;
    }
    try {
      options.onAnnounced?.(wasLive);
    } catch (err) {
      logger.error({ err }, 'onAnnounced failed');
    }
  };

  const tick = (): Promise<void> => {
    if (stopped || inFlight) return inFlight ?? Promise.resolve();
    inFlight = once().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  const timer = setInterval(() => void tick(), announceEveryMs(ttlMs));
  timer.unref();
  const first = tick();

  return {
    first,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      await inFlight;
      let id = lastId;
      if (id === undefined) {
        try {
          id = info().id;
        } catch {
          return; // never knew which node it is: nothing was announced
        }
      }
      try {
        await registry.remove(id);
      } catch (err) {
        logger.warn({ err, node: id }, 'removing the node from the registry failed (its entry lapses after its TTL)');
      }
    },
  };
}

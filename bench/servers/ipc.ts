// The harness's side channel to a server process it forked: "ready" once
// listening, a report (memory after a full GC, counters) on request, and a
// clean stop (so --cpu-prof profiles are written) on request or when the
// harness goes away.

import { Session } from 'node:inspector/promises';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface Memory {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** Memory after two full collections (the process runs with --expose-gc), so heap figures are live objects. */
export function memoryReport(): Memory {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}

export interface IpcServer {
  ready: Record<string, unknown>;
  report(): Record<string, unknown>;
  stop(): Promise<void>;
}

export function serveIpc(server: IpcServer): void {
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    server.stop().then(() => process.exit(0), (err: unknown) => {
      console.error('[bench server] stop failed', err);
      process.exit(1);
    });
  };
  let profiler: Session | undefined;
  process.on('message', (m: { type?: string; file?: string }) => {
    if (m.type === 'report') process.send?.({ type: 'report', ...server.report() });
    else if (m.type === 'stop') stop();
    else if (m.type === 'profile-start') {
      // CPU profile of just the measured phase (the harness asks around it).
      void (async () => {
        profiler = new Session();
        profiler.connect();
        await profiler.post('Profiler.enable');
        await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
        await profiler.post('Profiler.start');
        process.send?.({ type: 'profile-started' });
      })();
    } else if (m.type === 'profile-stop' && profiler) {
      const session = profiler;
      profiler = undefined;
      void (async () => {
        const { profile } = await session.post('Profiler.stop');
        session.disconnect();
        mkdirSync(dirname(m.file!), { recursive: true });
        writeFileSync(m.file!, JSON.stringify(profile));
        process.send?.({ type: 'profile-stopped' });
      })();
    }
  });
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.send?.({ type: 'ready', ...server.ready });
}

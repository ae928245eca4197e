// The harness's side channel to a server process it forked: "ready" once
// listening, a report (memory after a full GC, counters) on request, and a
// clean stop (so --cpu-prof profiles are written) on request or when the
// harness goes away.

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
  process.on('message', (m: { type?: string }) => {
    if (m.type === 'report') process.send?.({ type: 'report', ...server.report() });
    else if (m.type === 'stop') stop();
  });
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.send?.({ type: 'ready', ...server.ready });
}

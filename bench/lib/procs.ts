// Child processes of a benchmark run: servers and load generators, forked
// with an IPC channel. Every process started here is stopped by stopAll()
// (and killed if the harness itself exits), so a run leaves nothing behind.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const live = new Set<Child>();

export class Child {
  readonly exited: Promise<number | string>;
  private waiters: { type: string; resolve: (m: Msg) => void; reject: (e: Error) => void }[] = [];
  private listeners: ((m: Msg) => void)[] = [];
  running = true;
  /** Last lines of stderr, for the error when the process dies. */
  private tail: string[] = [];

  constructor(readonly name: string, readonly proc: ChildProcess) {
    live.add(this);
    proc.on('message', (m: Msg) => {
      const i = this.waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(m);
      for (const l of this.listeners) l(m);
    });
    const keep = (d: Buffer) => {
      for (const line of d.toString('utf8').split('\n')) if (line.trim()) this.tail.push(line);
      if (this.tail.length > 30) this.tail.splice(0, this.tail.length - 30);
    };
    proc.stderr?.on('data', (d: Buffer) => {
      keep(d);
      if (process.env.BENCH_VERBOSE) process.stderr.write(`[${name}] ${d.toString('utf8')}`);
    });
    proc.stdout?.on('data', (d: Buffer) => {
      if (process.env.BENCH_VERBOSE) process.stderr.write(`[${name}] ${d.toString('utf8')}`);
    });
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.running = false;
        live.delete(this);
        const err = new Error(`${name} exited (${code ?? signal}) ${this.tail.slice(-10).join('\n')}`);
        for (const w of this.waiters.splice(0)) w.reject(err);
        resolve(code ?? signal ?? 'exit');
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  send(m: Msg): void {
    if (this.running && this.proc.connected) this.proc.send(m);
  }

  /** The next message of a type (registered before anything is sent, so no reply is missed). */
  next<T extends Msg = Msg>(type: string, timeoutMs = 120_000): Promise<T> {
    if (!this.running) return Promise.reject(new Error(`${this.name} is not running: ${this.tail.slice(-10).join('\n')}`));
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.name}: no '${type}' within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        type,
        resolve: (m) => {
          clearTimeout(t);
          resolve(m as T);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
    });
  }

  /** Send a request and wait for the reply of the given type. */
  async ask<T extends Msg = Msg>(m: Msg, replyType: string, timeoutMs?: number): Promise<T> {
    const reply = this.next<T>(replyType, timeoutMs);
    this.send(m);
    return reply;
  }

  on(listener: (m: Msg) => void): void {
    this.listeners.push(listener);
  }

  /** Ask it to stop, then kill it if it does not within `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.send({ type: 'stop' });
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

export interface Msg {
  type: string;
  [key: string]: unknown;
}

/** Fork a TypeScript module of bench/ (through tsx) with an IPC channel. */
export function forkTs(name: string, module: string, args: string[], options: { env?: Record<string, string>; nodeArgs?: string[] } = {}): Child {
  const path = fileURLToPath(new URL(`../${module}`, import.meta.url));
  const proc = fork(path, args, {
    // BENCH_NODE_ARGS: more Node flags for every forked process (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`: profiles of the whole run, load generators included).
    execArgv: ['--import', 'tsx', '--expose-gc', ...(options.nodeArgs ?? []), ...(process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [])],
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  return new Child(name, proc);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((c) => c.stop()));
}

process.on('exit', () => {
  for (const c of live) c.proc.kill('SIGKILL');
});

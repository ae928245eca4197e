// Drives the real `longlink` binary (bin/longlink.js → dist/) as a user would.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { ADMIN_KEY, TOKEN_SECRET } from '../helpers/server.js';

export const BIN = fileURLToPath(new URL('../../bin/longlink.js', import.meta.url));

export class Proc {
  readonly lines: string[] = [];
  readonly errLines: string[] = [];
  exitCode: number | null = null;
  exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const parts = out.split('\n');
      out = parts.pop()!;
      this.lines.push(...parts);
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      const parts = err.split('\n');
      err = parts.pop()!;
      this.errLines.push(...parts);
    });
    // 'close', not 'exit': 'exit' may come before the last of stdout/stderr was read.
    this.exited = once(child, 'close').then(([code]) => {
      this.exitCode = code as number | null;
      return this.exitCode;
    });
  }

  /** JSON lines of stdout with the given type. */
  json<T = Record<string, unknown>>(type: string): T[] {
    return this.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => o.type === type) as T[];
  }

  async waitFor(check: () => boolean, timeoutMs = 15_000, what = 'output'): Promise<void> {
    const start = Date.now();
    while (!check()) {
      if (Date.now() - start > timeoutMs) {
        throw new Error(`timed out waiting for ${what}\nstdout:\n${this.lines.slice(-20).join('\n')}\nstderr:\n${this.errLines.slice(-20).join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.exitCode === null) this.child.kill(signal);
    return this.exited;
  }
}

export function run(args: string[], env: Record<string, string> = {}): Proc {
  return new Proc(spawn(process.execPath, [BIN, ...args], {
    // Tests make groups of users who never wrote to each other: anyone may add anyone.
    env: { ...process.env, LONGLINK_ADMIN_KEY: ADMIN_KEY, LONGLINK_GROUP_ADD_POLICY: 'anyone', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
}

export { freePort } from '../helpers/services.js';

export interface ServerProc {
  proc: Proc;
  http: string;
  tcp: string;
  ws: string;
}

/** `longlink start` on the given ports (0 = any) and data dir, with more settings in `env`; resolves once it listens. */
export async function startServer(dataDir: string, httpPort = 0, tcpPort = 0, env: Record<string, string> = {}): Promise<ServerProc> {
  const proc = run(['start'], {
    LONGLINK_HTTP_PORT: String(httpPort),
    LONGLINK_TCP_PORT: String(tcpPort),
    LONGLINK_DATA_DIR: dataDir,
    LONGLINK_TOKEN_SECRET: TOKEN_SECRET,
    ...env,
  });
  await proc.waitFor(() => proc.lines.some((l) => l.includes(' listening ')) || proc.exitCode !== null, 15_000, 'server start');
  const line = proc.lines.find((l) => l.includes(' listening '));
  if (!line) throw new Error(`server did not start: ${proc.errLines.join('\n')}`);
  const field = (name: string) => new RegExp(`${name}=(\\S+)`).exec(line)![1]!;
  return { proc, http: field('http'), tcp: field('tcp'), ws: field('ws') };
}

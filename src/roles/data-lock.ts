// One embedded server per data folder. Two on the same SQLite files would
// both write (SQLite allows it) while each delivers only to its own clients,
// so live delivery between them silently breaks: the second is refused.
//
// The lock is a file in the data folder holding the owner's pid. A lock left
// by a process that died (SIGKILL, power loss) is taken over: its pid no
// longer runs, or it is this process's own pid without this process holding
// it (a container restarted with the same pid).
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const LOCK_FILE = 'longlink.lock';

/** A role could not start; the message says why and what to do. */
export class StartError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartError';
  }
}

/** Lock files this process holds. */
const held = new Set<string>();

export interface DataLock {
  release(): void;
}

/** Take the data folder's lock, or throw StartError naming it and its owner. */
export function lockDataDir(dataDir: string): DataLock {
  const path = join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = ownerOf(path);
      if (owner !== undefined && running(owner) && (owner !== process.pid || held.has(path))) {
        throw new StartError(
          `the data folder ${dataDir} is in use by another longlink (pid ${owner}; lock ${path}): stop it first, or give this one another folder (--data-dir / LONGLINK_DATA_DIR)`,
        );
      }
      rmSync(path, { force: true }); // left by a process that is gone
      continue;
    }
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
    held.add(path);
    return {
      release() {
        if (!held.delete(path)) return;
        if (ownerOf(path) === process.pid) rmSync(path, { force: true });
      },
    };
  }
  throw new StartError(`could not take the lock ${path} of the data folder ${dataDir}`);
}

function ownerOf(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

// A client store in one JSON file, for Node: written atomically (a temp file
// beside it, fsynced, then renamed over it, so a crash leaves the old or the
// new snapshot, never half of one) and debounced (bursts of changes become
// one write of the latest snapshot).
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DebouncedWriter, parseSnapshot, type ClientSnapshot, type ClientStore } from './store.js';

export interface FileStoreOptions {
  /** Delay between a change and its write; a crash within it loses that change. @default 100 */
  debounceMs?: number;
  /** fsync the file before renaming it into place (durable across power loss). @default true */
  fsync?: boolean;
}

let tmpCounter = 0;

/**
 * A store kept in the file at `path` (its folder is created if missing). One
 * client per file at a time.
 */
export function fileStore(path: string, options: FileStoreOptions = {}): ClientStore {
  const doSync = options.fsync ?? true;
  const writer = new DebouncedWriter(async (snapshot) => {
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.${tmpCounter++}.tmp`;
    try {
      const file = await open(tmp, 'w', 0o600);
      try {
        await file.writeFile(JSON.stringify(snapshot));
        if (doSync) await file.sync();
      } finally {
        await file.close();
      }
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }, options.debounceMs ?? 100);
  return {
    async load(): Promise<ClientSnapshot | undefined> {
      // A snapshot saved but not yet written is the latest: write it first.
      await writer.flush().catch(() => undefined);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
      return parseSnapshot(JSON.parse(text) as unknown);
    },
    save: (snapshot) => writer.save(snapshot),
    flush: () => writer.flush(),
  };
}

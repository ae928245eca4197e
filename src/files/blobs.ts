// Where file bytes live: a BlobStore. One process keeps them in a folder
// (DiskBlobStore: <data dir>/files, or a folder every node of a cluster
// shares); a cluster keeps them in its PostgreSQL (PostgresBlobStore), next
// to the messages, so no other service is needed. A put is durable when it
// resolves; ids are checked (no path can be named through one).
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import pg from 'pg';

export interface BlobStore {
  /** Stores bytes under id (ids are [A-Za-z0-9_.-]{1,80}); durable when it resolves. Putting an existing id again replaces it. */
  put(id: string, bytes: Buffer): Promise<void>;
  /** The bytes, or undefined when there are none. */
  get(id: string): Promise<Buffer | undefined>;
  delete(id: string): Promise<void>;
  close(): Promise<void>;
}

const ID = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,79}$/;

function checkId(id: string): void {
  if (!ID.test(id) || id.includes('..')) throw new Error(`not a blob id: ${JSON.stringify(id.slice(0, 100))}`);
}

/** Files under dir/<first two characters of the id>/<id>; written to a temporary file, flushed, then renamed. */
export class DiskBlobStore implements BlobStore {
  constructor(private readonly dir: string) {}

  private path(id: string): string {
    checkId(id);
    return join(this.dir, id.slice(0, 2), id);
  }

  async put(id: string, bytes: Buffer): Promise<void> {
    const path = this.path(id);
    await mkdir(dirname(path), { recursive: true });
    const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
    const file = await open(temp, 'w', 0o600);
    try {
      await file.writeFile(bytes);
      await file.datasync();
    } finally {
      await file.close();
    }
    await rename(temp, path);
    // The rename is durable once the folder is flushed.
    const folder = await open(dirname(path), 'r');
    try {
      await folder.datasync();
    } finally {
      await folder.close();
    }
  }

  async get(id: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async delete(id: string): Promise<void> {
    await rm(this.path(id), { force: true });
  }

  async close(): Promise<void> {
    // nothing held open
  }
}

/** Rows of file_blobs in the cluster's PostgreSQL (a schema of its own when given). */
export class PostgresBlobStore implements BlobStore {
  private constructor(private readonly pool: pg.Pool) {}

  static async open(options: { url: string; schema?: string; poolSize?: number }): Promise<PostgresBlobStore> {
    const { schema } = options;
    if (schema !== undefined && !/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`schema must be lowercase letters, digits and underscores: ${JSON.stringify(schema)}`);
    const pool = new pg.Pool({
      connectionString: options.url, max: options.poolSize ?? 4, connectionTimeoutMillis: 10_000, statement_timeout: 60_000,
      ...(schema !== undefined ? { options: `-c search_path="${schema}"` } : {}),
    });
    pool.on('error', () => {
      // a broken idle connection: the pool opens another for the next query
    });
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`longlink-file-blobs:${schema ?? ''}`]);
      if (schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      await client.query(`CREATE TABLE IF NOT EXISTS file_blobs (id TEXT COLLATE "C" PRIMARY KEY, bytes BYTEA NOT NULL, stored_at_ms BIGINT NOT NULL)`);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
    return new PostgresBlobStore(pool);
  }

  async put(id: string, bytes: Buffer): Promise<void> {
    checkId(id);
    await this.pool.query(
      `INSERT INTO file_blobs (id, bytes, stored_at_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes, stored_at_ms = excluded.stored_at_ms`,
      [id, bytes, Date.now()],
    );
  }

  async get(id: string): Promise<Buffer | undefined> {
    checkId(id);
    const r = await this.pool.query<{ bytes: Buffer }>('SELECT bytes FROM file_blobs WHERE id = $1', [id]);
    return r.rows[0]?.bytes;
  }

  async delete(id: string): Promise<void> {
    checkId(id);
    await this.pool.query('DELETE FROM file_blobs WHERE id = $1', [id]);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

// The test services start, answer and stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import pg from 'pg';
import { startPostgres, startRedis } from './services.js';

test('a Redis server starts on a free port, answers, keeps AOF data across a restart', async () => {
  const redis = await startRedis({ appendonly: true });
  const client = new Redis(redis.url, { maxRetriesPerRequest: null });
  try {
    assert.equal(await client.set('k', 'v'), 'OK');
    await new Promise((r) => setTimeout(r, 1200)); // appendfsync everysec
    await redis.restart();
    assert.equal(await client.get('k'), 'v');
  } finally {
    client.disconnect();
    await redis.stop();
  }
});

test('a PostgreSQL cluster starts in a temp folder and answers', async () => {
  const server = await startPostgres();
  const client = new pg.Client({ connectionString: server.url });
  try {
    await client.connect();
    const r = await client.query<{ n: number }>('SELECT 41 + 1 AS n');
    assert.equal(r.rows[0]!.n, 42);
  } finally {
    await client.end();
    await server.stop();
  }
});

// The Watches contract on Redis, against a real redis-server.
import { after, before } from 'node:test';
import { Redis } from 'ioredis';
import { watchesContract } from './watches.contract.js';
import { RedisWatches } from '../../src/engines/watches-redis.js';
import { startRedis, type RedisServer } from '../helpers/services.js';

let redis: RedisServer;
let shared: Redis;
let n = 0;
const prefix = () => `w${++n}:`;

before(async () => {
  redis = await startRedis();
  shared = new Redis(redis.url);
});
after(async () => {
  await shared.quit();
  await redis.stop();
});

watchesContract('RedisWatches', () => new RedisWatches({ url: redis.url, prefix: prefix() }));
// A client lent by the test: close() must leave it open for the next ones.
watchesContract('RedisWatches (client passed in)', () => new RedisWatches(shared, prefix()));

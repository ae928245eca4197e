// The Bus contract on Redis Streams, against a real redis-server.
import { after, before } from 'node:test';
import { busContract } from './bus.contract.js';
import { RedisBus } from '../../src/engines/bus-redis.js';
import { startRedis, type RedisServer } from '../helpers/services.js';

let redis: RedisServer;
let n = 0;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

// Each bus gets its own key prefix: a fresh cluster on the shared server.
busContract('RedisBus', () => new RedisBus({ url: redis.url, nodeId: 'logic-1', prefix: `t${++n}:`, shards: 4, leaseMs: 2000, blockMs: 200 }));
busContract('RedisBus (1 shard, batch 3)', () => new RedisBus({ url: redis.url, nodeId: 'logic-1', prefix: `s${++n}:`, shards: 1, batch: 3, leaseMs: 2000, blockMs: 200 }));

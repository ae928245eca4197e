import { busContract } from './bus.contract.js';
import { MemoryBus } from '../../src/engines/bus-memory.js';

busContract('MemoryBus', () => new MemoryBus());
// Small batches: the batch boundaries fall inside the tests' message runs.
busContract('MemoryBus (maxBatch 3)', () => new MemoryBus({ maxBatch: 3 }));

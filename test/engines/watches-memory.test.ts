import { watchesContract } from './watches.contract.js';
import { MemoryWatches } from '../../src/engines/watches.js';

watchesContract('MemoryWatches', () => new MemoryWatches());

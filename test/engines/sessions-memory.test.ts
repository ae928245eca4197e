import { sessionsContract } from './sessions.contract.js';
import { MemorySessions } from '../../src/engines/sessions-memory.js';

sessionsContract('MemorySessions', () => new MemorySessions());

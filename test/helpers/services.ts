// Real Redis and PostgreSQL for tests: the same launcher the local cluster uses.
export * from '../../src/dev/services.js';

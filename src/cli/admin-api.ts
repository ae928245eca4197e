// What the admin commands (`dead`, `dc`, `admin`) share: a logic or auth
// node's API (--server, LONGLINK_SERVER), the admin key (--admin-key,
// LONGLINK_ADMIN_KEY) and the CA to trust (--ca, LONGLINK_CA).
import { readFileSync } from 'node:fs';
import { UsageError } from './args.js';
import { nodeFetch, type HttpFetch } from '../client/index.js';

export interface AdminApi {
  /** The API's base URL, no trailing slash. */
  server: string;
  /** fetch, trusting --ca when given. */
  fetcher: HttpFetch;
  /** The admin key's bearer header and a JSON content type. */
  headers: Record<string, string>;
}

export function adminApi(flags: Record<string, string | undefined>, missingKey = 'set LONGLINK_ADMIN_KEY (the cluster\'s admin key)'): AdminApi {
  const server = (flags.server ?? process.env.LONGLINK_SERVER ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  const adminKey = flags['admin-key'] ?? process.env.LONGLINK_ADMIN_KEY;
  if (!adminKey) throw new UsageError(missingKey);
  const caFile = flags.ca ?? process.env.LONGLINK_CA;
  const fetcher = caFile ? nodeFetch({ ca: readFileSync(caFile) }) : fetch;
  return { server, fetcher, headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' } };
}

// `longlink dead list|replay`: the dead letters, through a logic node's admin
// API (GET /api/v1/dead-letters, POST /api/v1/dead-letters/replay).
import { UsageError } from './args.js';
import { adminApi } from './admin-api.js';

export async function runDead(sub: string | undefined, flags: Record<string, string | undefined>, ids: readonly string[]): Promise<number> {
  const { server, fetcher, headers } = adminApi(flags, 'set LONGLINK_ADMIN_KEY (printed by `longlink start`)');
  let res: Response;
  if (sub === 'list') {
    const limit = flags.limit ?? '100';
    res = await fetcher(`${server}/api/v1/dead-letters?limit=${encodeURIComponent(limit)}`, { headers });
  } else if (sub === 'replay') {
    res = await fetcher(`${server}/api/v1/dead-letters/replay`, { method: 'POST', headers, body: JSON.stringify({ ids }) });
  } else {
    throw new UsageError(sub === undefined ? 'dead needs list or replay' : `unknown dead command ${sub}: list or replay`);
  }
  const body = await res.json() as Record<string, unknown>;
  if (!res.ok) {
    console.error(JSON.stringify(body));
    return 1;
  }
  if (sub === 'list') {
    for (const d of body.dead_letters as unknown[]) console.log(JSON.stringify({ type: 'dead_letter', ...(d as object) }));
    console.error(JSON.stringify({ type: 'count', count: body.count }));
  } else {
    for (const id of body.replayed as string[]) console.log(JSON.stringify({ type: 'replayed', id }));
  }
  return 0;
}

// `longlink dc status|failover|failback`: who serves each datacenter's homes,
// and moving them, through an API node's admin routes (GET /api/v1/dc,
// POST /api/v1/dc/failover, POST /api/v1/dc/failback). Prints the answer as
// one JSON line.
import { UsageError } from './args.js';
import { adminApi } from './admin-api.js';

export async function runDc(sub: string | undefined, dc: string | undefined, flags: Record<string, string | undefined>): Promise<number> {
  const { server, fetcher, headers } = adminApi(flags);
  let res: Response;
  if (sub === 'status') {
    res = await fetcher(`${server}/api/v1/dc`, { headers });
  } else if (sub === 'failover' || sub === 'failback') {
    if (!dc) throw new UsageError(`dc ${sub} needs the datacenter whose homes move: dc ${sub} a`);
    const body = sub === 'failover' && flags.to ? { dc, to: flags.to } : { dc };
    res = await fetcher(`${server}/api/v1/dc/${sub}`, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(120_000) });
  } else {
    throw new UsageError(sub === undefined ? 'dc needs status, failover or failback' : `unknown dc command ${sub}: status, failover or failback`);
  }
  const text = await res.text();
  (res.ok ? console.log : console.error)(text.trim());
  return res.ok ? 0 : 1;
}

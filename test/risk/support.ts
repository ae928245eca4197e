// The risk API as the risk tests call it, on an embedded test server.
import assert from 'node:assert/strict';
import { ADMIN_KEY, type TestServer } from '../helpers/server.js';

/** A JSON request to the server's API with the admin key (or `key`): its status and parsed body. */
export async function api(s: TestServer, method: string, path: string, body?: unknown, key = ADMIN_KEY): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${s.httpUrl}${path}`, {
    method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** PUT /api/v1/risk/rules, which must be accepted; the new version. */
export async function putRules(s: TestServer, rules: unknown): Promise<number> {
  const r = await api(s, 'PUT', '/api/v1/risk/rules', rules);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.version as number;
}

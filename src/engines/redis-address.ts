// Redis addresses: `redis://…` for one server, `redis-cluster://host:port,…`
// for a Redis Cluster named by some of its nodes. Apart from the client
// (redis-shared.ts), so reading the configuration loads no Redis library.
const CLUSTER_SCHEME = 'redis-cluster://';

/** The address of a Redis Cluster named by some of its nodes. */
export function clusterUrl(nodes: readonly { host: string; port: number }[]): string {
  return CLUSTER_SCHEME + nodes.map((n) => `${n.host}:${n.port}`).join(',');
}

/** The seed nodes of a `redis-cluster://` address; undefined for one server's. */
export function clusterNodesOf(url: string): { host: string; port: number }[] | undefined {
  if (!url.startsWith(CLUSTER_SCHEME)) return undefined;
  const nodes = url.slice(CLUSTER_SCHEME.length).split(',').filter((s) => s.length > 0).map((hostPort) => {
    const colon = hostPort.lastIndexOf(':');
    const host = hostPort.slice(0, colon).replace(/^\[|\]$/g, '');
    const port = Number(hostPort.slice(colon + 1));
    if (colon <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`not host:port: ${JSON.stringify(hostPort)}`);
    return { host, port };
  });
  if (nodes.length === 0) throw new Error('a Redis Cluster address names at least one node');
  return nodes;
}

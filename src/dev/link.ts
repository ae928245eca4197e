// A link between two datacenters on one machine: a TCP proxy that delays
// every chunk by a fixed time each way (order kept: timers of one delay fire
// in the order they were set), and can be cut (every connection through it
// closed, new ones refused) and healed. `npm run cluster -- --dcs 2` puts one
// in front of each datacenter's Redis and PostgreSQL for each other one.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';

export class DelayLink {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private cutNow = false;
  private target: number | undefined;

  /** @param delayMs added to each direction (a round trip costs twice it) */
  constructor(readonly delayMs: number, target?: number) {
    this.target = target;
  }

  /** Listen on a free loopback port (or `port`); returns it. */
  async listen(port = 0): Promise<number> {
    const server = createServer((client) => this.accept(client));
    this.server = server;
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    return (server.address() as { port: number }).port;
  }

  get port(): number {
    return (this.server!.address() as { port: number }).port;
  }

  /** Where connections go (a port on 127.0.0.1); until set, they are refused. */
  setTarget(port: number): void {
    this.target = port;
  }

  /** Close every connection through the link and refuse new ones, until heal(). */
  cut(): void {
    this.cutNow = true;
    for (const s of this.sockets) s.destroy();
  }

  heal(): void {
    this.cutNow = false;
  }

  get isCut(): boolean {
    return this.cutNow;
  }

  async close(): Promise<void> {
    this.cut();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  private accept(client: Socket): void {
    if (this.cutNow || this.target === undefined) {
      client.destroy();
      return;
    }
    const upstream = connect(this.target, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined); // the other side is closed below
    }
    this.pipe(client, upstream);
    this.pipe(upstream, client);
  }

  /** from → to, each chunk delayMs late; an end or close goes the same way, after what came before it. */
  private pipe(from: Socket, to: Socket): void {
    const later = (fn: () => void) => (this.delayMs > 0 ? setTimeout(fn, this.delayMs) : setImmediate(fn));
    from.on('data', (chunk: Buffer) => later(() => {
      if (!to.destroyed) to.write(chunk);
    }));
    from.on('end', () => later(() => to.end()));
    from.on('close', () => later(() => to.destroy()));
  }
}

// A loopback TCP proxy a test can cut and restore, to take a real store "down" for one
// coordinator without stopping the server other tests share.
import net from 'node:net';

export class TcpProxy {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  /** Each open connection's server side, keyed by its client side (for holdReplies). */
  private readonly upstreams = new Map<net.Socket, net.Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<this> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.once('close', () => this.sockets.delete(socket));
        socket.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
      this.upstreams.set(client, upstream);
      client.once('close', () => this.upstreams.delete(client));
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
    return this;
  }

  /**
   * On every open connection, stops passing what the server sends back while still passing
   * what the client sends: requests arrive, their replies (acks, confirms) are lost. Lets a
   * test cut a connection after the broker has taken a message but before the client heard.
   * stop() then start() heals it.
   */
  holdReplies(): void {
    for (const [client, upstream] of this.upstreams) {
      upstream.unpipe(client);
      upstream.pause();
    }
  }

  /** Refuses new connections and resets every open one. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

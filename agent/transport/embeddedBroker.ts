import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { Aedes, type AedesPublishPacket, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import { normaliseSerial } from '../../certs/authority.js';
import { DEVICE_ID_PATTERN } from '../../certs/profiles/deviceId.js';
import { ServiceStartError, InternalError, PeerError } from '../errors.js';
import type { Service } from '../lifecycle/service.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { TopicAcl, type ListenerName } from './brokerAcl.js';
import { BrokerMetrics } from './brokerMetrics.js';
import { isAnnouncement, type BrokerWitness } from './brokerWitness.js';
import { limitPackets } from './packetLimit.js';
import type { BrokerLink, DeviceAccess, InboundMessage, MessageHandler, OutboundOptions } from './types.js';

export interface EmbeddedBrokerOptions {
  host: string;
  provisioningPort: number;
  provisioningTls: boolean;
  mtlsPort: number;
  topicPrefix: string;
  maxPayloadBytes: number;
  /** configuration.topicRoot (default `config`): its desired and reported topics in the ACL. */
  configTopicRoot?: string;
}

export interface EmbeddedBrokerDeps {
  log: Logger;
  metrics: Metrics;
  options: EmbeddedBrokerOptions;
  /**
   * Called at start(): PEM of the broker-server key, its certificate followed by the issuing CA,
   * and the trust bundle (CA certificates) client certificates must chain to.
   */
  tls: () => { key: string; cert: string; ca: string };
  access: DeviceAccess;
  /** Told when a device identity gets its first, or loses its last, mutual-TLS connection. */
  presence?: (identity: string, online: boolean) => void;
  /** Told of clients no identity from the gateway CA explains (the device report's sightings). */
  witness?: BrokerWitness;
}

/** One accepted connection, keyed by the stream aedes sees as `client.conn`. */
interface Connection {
  listener: ListenerName;
  socket: Socket;
  /** Whom the ACL is about: the certificate's CN on mtls, the client id on provisioning. */
  id?: string;
  /** mtls: the serial of the verified peer certificate. */
  serial?: string;
  /** The client id as sent in CONNECT: aedes replaces an empty one with a random id. */
  clientId?: string;
  /** The device report's view of a provisioning client: when it sent CONNECT, whether it asked to enroll, whether it was told of. */
  report?: { since: number; address: string | undefined; requested: boolean; told: boolean; refused?: string; timer?: NodeJS.Timeout };
}

/** A provisioning client that stays this long without an enrollment request is reported without waiting for it to leave. */
const UNENROLLED_STAY_MS = 60_000;

/** Room for the topic and the rest of a PUBLISH around a payload of the maximum size. */
const PACKET_HEADROOM = 1024;

/**
 * An MQTT 3.1.1 broker inside the agent (aedes) with the two listeners an
 * external Mosquitto would have: provisioning (no client certificate; a
 * client reaches only its own request and response topics) and mutual TLS
 * (certificates from the gateway CA; the CN is the identity, and
 * `access.allowed` is asked at CONNECT and before every delivery). Also the
 * agent's own in-process BrokerLink, which no client ACL applies to.
 */
export class EmbeddedBroker implements Service, BrokerLink {
  readonly name = 'broker';
  private readonly acl: TopicAcl;
  private readonly metrics: BrokerMetrics;
  private aedes: Aedes | undefined;
  private servers: Partial<Record<ListenerName, Server>> = {};
  private ports: { provisioning: number; mtls: number } | undefined;
  /** Weak, so that aedes' clientDisconnect, which comes after the socket closed, still finds its listener. */
  private readonly connections = new WeakMap<Duplex, Connection>();
  private readonly open = new Set<Connection>();
  private readonly byIdentity = new Map<string, Set<Connection>>();
  /** Clients past CONNACK, the source of the connected-clients gauge. */
  private readonly registered = new Set<Client>();
  private readonly perListener = new Map<ListenerName, number>();
  /** Registered mTLS clients per certificate identity: presence changes with the first and the last. */
  private readonly perIdentity = new Map<string, number>();
  /** Every TCP socket, including those still in a TLS handshake, for stop(). */
  private readonly sockets = new Set<Socket>();
  private stopping: Promise<void> | undefined;

  constructor(private readonly deps: EmbeddedBrokerDeps) {
    this.acl = new TopicAcl(deps.options.topicPrefix, deps.options.configTopicRoot);
    this.metrics = new BrokerMetrics(deps.metrics.registry);
  }

  async start(signal: AbortSignal): Promise<void> {
    const o = this.deps.options;
    try {
      const material = this.deps.tls();
      const aedes = await Aedes.createBroker({
        preConnect: (client, packet, done) => {
          const conn = this.connectionOf(client);
          if (conn) conn.clientId = packet.clientId;
          if (conn?.listener === 'provisioning') conn.id = packet.clientId;
          if (conn?.listener === 'provisioning' && this.deps.witness && !conn.report) {
            // The peer's address now: a closed socket no longer tells it.
            conn.report = { since: Date.now(), address: conn.socket.remoteAddress, requested: false, told: false };
            conn.report.timer = setTimeout(() => this.witnessUnenrolled(conn, false), UNENROLLED_STAY_MS).unref();
          }
          done(null, true);
        },
        authenticate: (client, _username, _password, done) => this.authenticate(client, done),
        authorizePublish: (client, packet, done) => done(this.authorizePublish(client, packet)),
        authorizeSubscribe: (client, sub, done) => done(null, this.authorizeSubscribe(client, sub)),
        authorizeForward: (client, packet) => this.authorizeForward(client, packet),
      });
      this.aedes = aedes;
      aedes.on('client', (client) => this.countClient(client, true));
      aedes.on('clientDisconnect', (client) => this.countClient(client, false));
      aedes.on('clientError', (client, err) => this.deps.log.debug({ clientId: client.id, err: err.message }, 'broker client error'));
      aedes.on('connectionError', (_client, err) => this.deps.log.debug({ err: err.message }, 'broker connection error'));
      // aedes emits 'error' from its will and persistence timers; unhandled, it would end the process.
      (aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) => this.deps.log.error({ err }, 'broker error'));
      signal.throwIfAborted();

      const provisioning = o.provisioningTls
        ? createTlsServer({ key: material.key, cert: material.cert, minVersion: 'TLSv1.2', noDelay: true }, (s) => this.accept('provisioning', s))
        : createNetServer({ noDelay: true }, (s) => this.accept('provisioning', s));
      const mtls = createTlsServer(
        { key: material.key, cert: material.cert, ca: material.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', noDelay: true },
        (s) => this.accept('mtls', s),
      );
      this.servers = { provisioning, mtls };
      for (const [listener, server] of Object.entries(this.servers) as [ListenerName, Server][]) {
        server.on('connection', (socket: Socket) => {
          this.sockets.add(socket);
          socket.once('close', () => this.sockets.delete(socket));
        });
        server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
          this.metrics.refused('connection', listener, 'tls');
          this.deps.log.warn({ listener, remoteAddress: socket.remoteAddress, err: err.message }, 'broker refused a TLS handshake');
        });
      }
      const provisioningPort = await listen(provisioning, 'provisioning', o.host, o.provisioningPort, this.deps.log);
      signal.throwIfAborted();
      const mtlsPort = await listen(mtls, 'mtls', o.host, o.mtlsPort, this.deps.log);
      signal.throwIfAborted();
      this.ports = { provisioning: provisioningPort, mtls: mtlsPort };
      this.deps.log.info({ host: o.host, provisioningPort, provisioningTls: o.provisioningTls, mtlsPort }, 'broker listening');
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** The ports actually listened on (useful when configured as 0). */
  addresses(): { provisioning: number; mtls: number } {
    if (!this.ports) throw new InternalError('the embedded broker is not started');
    return { ...this.ports };
  }

  /**
   * Closes every connection made with a certificate of `identity`, whatever
   * its state, and returns how many: for a certificate that was just revoked.
   */
  disconnectIdentity(identity: string): number {
    const conns = [...(this.byIdentity.get(identity) ?? [])];
    for (const conn of conns) conn.socket.destroy();
    if (conns.length > 0) this.deps.log.info({ identity, connections: conns.length }, 'broker disconnected identity');
    return conns.length;
  }

  async subscribe(filters: string[], handler: MessageHandler): Promise<void> {
    const aedes = this.running();
    for (const filter of filters) {
      // aedes keeps $SYS topics from a client's leading-wildcard filter, not from an in-process one.
      const hideSys = filter.startsWith('#') || filter.startsWith('+');
      const deliver = (packet: AedesPublishPacket, done: () => void): void => {
        if (!(hideSys && packet.topic.startsWith('$'))) {
          try {
            const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
            handler({ topic: packet.topic, payload, ...(packet.retain ? { retain: true } : {}) });
          } catch (err) {
            this.deps.log.error({ err, topic: packet.topic }, 'broker message handler threw');
          }
        }
        done();
      };
      await new Promise<void>((resolve) => aedes.subscribe(filter, deliver, resolve));
    }
  }

  /** Read from the broker's store at once: `listenMs` does not apply. */
  async retained(filters: string[]): Promise<InboundMessage[]> {
    const got: InboundMessage[] = [];
    // aedes' typings leave out its persistence; createRetainedStreamCombi is aedes-persistence's documented API.
    const persistence = (this.running() as unknown as { persistence: { createRetainedStreamCombi(p: string[]): AsyncIterable<AedesPublishPacket> } })
      .persistence;
    const stream = persistence.createRetainedStreamCombi(filters);
    for await (const packet of stream)
      got.push({ topic: packet.topic, payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload) });
    return got;
  }

  /**
   * MQTT 3.1.1 only: `correlationData` has nowhere to go and is dropped.
   * Retained messages live in aedes' in-memory store: they are gone after a
   * restart, so their owner publishes them again (configuration does).
   */
  async publish(topic: string, payload: Buffer, options: OutboundOptions): Promise<void> {
    const aedes = this.running();
    const packet: PublishPacket = { cmd: 'publish', topic, payload, qos: options.qos, retain: options.retain === true, dup: false };
    await new Promise<void>((resolve, reject) => aedes.publish(packet, (err) => (err ? reject(err) : resolve())));
  }

  isConnected(): boolean {
    return this.ports !== undefined && this.stopping === undefined;
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown().finally(() => (this.stopping = undefined));
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    const servers = Object.values(this.servers);
    const closed = servers.map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())));
    // server.close() waits for open connections: end them now, mid-handshake ones too.
    for (const socket of this.sockets) socket.destroy();
    for (const conn of this.open) conn.socket.destroy();
    const aedes = this.aedes;
    if (aedes) await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await Promise.all(closed);
    this.aedes = undefined;
    this.servers = {};
    this.ports = undefined;
    this.registered.clear();
    this.perListener.clear();
    this.perIdentity.clear();
    this.metrics.connectedClients.reset();
    if (aedes) this.deps.log.info('broker stopped');
  }

  private running(): Aedes {
    if (!this.aedes || !this.isConnected()) throw new InternalError('the embedded broker is not running');
    return this.aedes;
  }

  /**
   * Counts kept per listener and per mTLS identity, moved only when a client
   * enters or leaves `registered` (so a disconnect reported after stop(),
   * which cleared them all, cannot drive them negative). Not recounted from
   * the set: in a reconnect storm that was quadratic in the clients.
   */
  private countClient(client: Client, connected: boolean): void {
    if (connected ? this.registered.has(client) : !this.registered.has(client)) return;
    const conn = this.connectionOf(client);
    const listener = conn?.listener;
    if (connected) this.registered.add(client);
    else this.registered.delete(client);
    if (!listener) return;
    const step = connected ? 1 : -1;
    const count = (this.perListener.get(listener) ?? 0) + step;
    this.perListener.set(listener, count);
    this.metrics.connectedClients.set({ listener }, count);
    if (listener === 'mtls' && conn.id !== undefined) {
      const id = conn.id;
      const same = (this.perIdentity.get(id) ?? 0) + step;
      if (same === 0) this.perIdentity.delete(id);
      else this.perIdentity.set(id, same);
      // Online with its first connection, offline with its last.
      if (same === (connected ? 1 : 0)) this.deps.presence?.(id, connected);
    }
  }

  private accept(listener: ListenerName, socket: Socket): void {
    const conn: Connection = { listener, socket };
    if (listener === 'mtls') {
      const peer = (socket as TLSSocket).getPeerCertificate();
      // A certificate with two CNs gives an array here: no identity, refused at CONNECT.
      if (typeof peer.subject?.CN === 'string') conn.id = peer.subject.CN;
      try {
        conn.serial = normaliseSerial(peer.serialNumber);
      } catch {
        // No usable serial: refused at CONNECT.
      }
    }
    const max = this.deps.options.maxPayloadBytes + PACKET_HEADROOM;
    const stream = limitPackets(socket, max, (remainingLength) => {
      this.metrics.refused('connection', listener, 'too_large');
      this.deps.log.warn({ listener, id: conn.id, clientId: conn.clientId, remainingLength, limit: max }, 'broker closed a connection: packet too large');
    });
    this.connections.set(stream, conn);
    this.open.add(conn);
    const identity = conn.id;
    if (identity !== undefined) this.byIdentity.set(identity, (this.byIdentity.get(identity) ?? new Set()).add(conn));
    socket.once('close', () => {
      this.open.delete(conn);
      if (conn.report) this.witnessUnenrolled(conn, true);
      const set = identity === undefined ? undefined : this.byIdentity.get(identity);
      if (set?.delete(conn) && set.size === 0) this.byIdentity.delete(identity!);
    });
    if (!this.aedes || this.aedes.closed || this.stopping) socket.destroy();
    else this.aedes.handle(stream);
  }

  private connectionOf(client: Client): Connection | undefined {
    return this.connections.get(client.conn as Duplex);
  }

  private authenticate(client: Client, done: (error: AuthenticateError | null, success: boolean | null) => void): void {
    const conn = this.connectionOf(client);
    const refuse = (reason: string, returnCode: 2 | 5, message: string): void => {
      this.metrics.refused('connection', conn?.listener ?? 'unknown', reason);
      this.deps.log.warn({ listener: conn?.listener, id: conn?.id, clientId: conn?.clientId, reason }, 'broker refused a connection');
      // Aedes reads returnCode off a plain Error (its AuthenticateError type); it never leaves the broker library.
      done(Object.assign(new Error(message), { returnCode }), false);
    };
    if (!conn) return refuse('not_authorized', 5, 'unknown connection');
    if (conn.listener === 'provisioning') {
      if (!DEVICE_ID_PATTERN.test(conn.id ?? '')) {
        if (conn.report) conn.report.refused = 'bad_client_id';
        return refuse('bad_client_id', 2, 'client id is not a device id');
      }
    } else {
      const socket = conn.socket as TLSSocket;
      if (!socket.authorized || conn.serial === undefined || !DEVICE_ID_PATTERN.test(conn.id ?? '')) {
        return refuse('not_authorized', 5, 'certificate without a usable identity');
      }
      if (!this.allowed(conn)) {
        this.deps.witness?.refusedCertificate({ identity: conn.id!, serial: conn.serial, remoteAddress: conn.socket.remoteAddress });
        return refuse('not_authorized', 5, 'certificate not allowed');
      }
    }
    // Taking over a session by client id is only for the same principal: otherwise an
    // unauthenticated provisioning client could knock a device off by reusing its client id.
    const holder = this.holderOf(client.id);
    const held = holder && holder !== client ? this.connectionOf(holder) : undefined;
    if (held && (held.listener !== conn.listener || held.id !== conn.id)) {
      return refuse('client_id_in_use', 2, 'client id in use by another identity');
    }
    done(null, true);
  }

  private holderOf(clientId: string): Client | undefined {
    // aedes keeps registered clients by id; the map is not in its typings.
    return (this.aedes as unknown as { clients?: Record<string, Client> } | undefined)?.clients?.[clientId];
  }

  private authorizePublish(client: Client | null, packet: PublishPacket): Error | null {
    const conn = client ? this.connectionOf(client) : undefined;
    // null client: a will left by a broker that is gone; nothing to check it against.
    if (!conn) return new PeerError('BROKER_UNAVAILABLE', 'publish without a known connection');
    let reason: string | undefined;
    if (Buffer.byteLength(packet.payload) > this.deps.options.maxPayloadBytes) reason = 'too_large';
    else if (conn.listener === 'mtls' && !this.allowed(conn)) reason = 'not_authorized';
    else if (!this.acl.mayPublish(conn.listener, conn.id!, packet.topic)) reason = 'acl';
    else if (packet.retain && !this.acl.mayRetain(packet.topic)) reason = 'retained';
    if (reason === undefined) {
      // The only topic a provisioning client may publish to is its enrollment request.
      if (conn.report) conn.report.requested = true;
      return null;
    }
    this.metrics.refused('publish', conn.listener, reason);
    if (conn.listener === 'provisioning' && isAnnouncement(packet.topic))
      this.deps.witness?.uncertifiedAnnouncement({
        clientId: conn.clientId ?? conn.id ?? '',
        remoteAddress: conn.socket.remoteAddress,
        topic: packet.topic,
        bytes: Buffer.byteLength(packet.payload),
      });
    // The usual integrator's mistake: requests published under another client id than the device id.
    const hint =
      conn.listener === 'provisioning' && reason === 'acl'
        ? { hint: `a provisioning client may publish only to ${this.deps.options.topicPrefix}/<its client id>/request: the client id must be the device id` }
        : {};
    this.deps.log.warn(
      { listener: conn.listener, id: conn.id, clientId: conn.clientId, topic: packet.topic, bytes: Buffer.byteLength(packet.payload), reason, ...hint },
      'broker refused a publish',
    );
    return new PeerError('BROKER_UNAVAILABLE', `publish refused: ${reason}`);
  }

  private authorizeSubscribe(client: Client, sub: Subscription): Subscription | null {
    const conn = this.connectionOf(client);
    if (conn && this.acl.maySubscribe(conn.listener, conn.id!, sub.topic)) return sub;
    this.metrics.refused('subscribe', conn?.listener ?? 'unknown', 'acl');
    this.deps.log.warn({ listener: conn?.listener, id: conn?.id, clientId: client.id, filter: sub.topic }, 'broker refused a subscription');
    return null;
  }

  private authorizeForward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const conn = this.connectionOf(client);
    if (!conn) return null;
    if (conn.listener === 'mtls' && !this.allowed(conn)) {
      this.deps.log.debug({ id: conn.id, clientId: client.id, topic: packet.topic }, 'broker dropped a delivery: access withdrawn');
      return null;
    }
    return this.acl.mayReceive(conn.listener, conn.id!, packet.topic) ? packet : null;
  }

  /** Tells the witness, once, of a provisioning client that sent CONNECT but no enrollment request (left, or stayed too long). */
  private witnessUnenrolled(conn: Connection, left: boolean): void {
    const r = conn.report!;
    clearTimeout(r.timer);
    if (r.requested || r.told) return;
    r.told = true;
    this.deps.witness?.unenrolledClient({
      clientId: conn.clientId ?? '',
      remoteAddress: r.address,
      stayedMs: Date.now() - r.since,
      left,
      ...(r.refused ? { refused: r.refused } : {}),
    });
  }

  /** DeviceAccess for an mTLS connection; an access check that throws counts as a refusal. */
  private allowed(conn: Connection): boolean {
    try {
      return this.deps.access.allowed(conn.id!, conn.serial!);
    } catch (err) {
      this.deps.log.error({ err, id: conn.id }, 'broker access check failed');
      return false;
    }
  }
}

function listen(server: Server, listener: ListenerName, host: string, port: number, log: Logger): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(
        new ServiceStartError(`the broker's ${listener} listener cannot listen on ${host} port ${port}: ${err.message}`, {
          cause: err,
          details: { listener, host, port },
        }),
      );
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      server.on('error', (err: Error) => log.error({ listener, err }, 'broker listener error'));
      resolve((server.address() as AddressInfo).port);
    });
  });
}

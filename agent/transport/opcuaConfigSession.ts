import { PeerError, RefusedError } from '../errors.js';
import type { Logger } from '../log.js';
import { DATA_TYPE_IDS, fromWire, sameValue, toWire, valueRefusal, type JsonValue, type OpcuaDataType, type OpcuaNodeBinding } from './opcuaConfigValues.js';
import { abandonConnect, closeClient, ProbeTimeout, within, type OpcuaProbe } from './opcuaProbe.js';
import { thumbprintOf, type AdminUser, type OpcuaPushSessions } from './opcuaPushSession.js';
import { watchRefusal } from './opcuaRefusal.js';

type Session = import('node-opcua-client').ClientSession;
type Opcua = typeof import('node-opcua-client');

/** A provisioned server as a configuration session reaches it. */
export interface ConfigServer {
  url: string;
  /** The certificate (DER) the push verified on the server: the session is pinned to it, and credentials go to no other. */
  certificate: Buffer;
  /** The server's credentials: those the push uses (opcua.push.securityAdmins). */
  user: AdminUser;
  /** Bounds connecting, and each call made on the session. */
  timeoutMs: number;
}

/** The values to write and where: `nodes` must bind every key of `values`. */
export interface ConfigValues {
  values: Record<string, JsonValue>;
  nodes?: Record<string, OpcuaNodeBinding> | undefined;
}

/** What a configuration's Write came to (the configuration's DeliveryOutcome for OPC UA): `retry` false when retrying cannot mend it. */
export type DeliveryOutcome = { kind: 'verified'; observed: Record<string, JsonValue> } | { kind: 'failed'; reason: string; retry: boolean };

/** The values read back, per key (null where the read failed), and what differs from the configuration (the configuration's Observation). */
export interface Observation {
  observed: Record<string, JsonValue | null>;
  differences: { key: string; nodeId: string; expected: JsonValue; actual: JsonValue | null; error?: string }[];
}

type Failed = { kind: 'failed'; reason: string; retry: boolean };

/** What a drift check came to: the values read, or why the server could not be read (`retry`: a later check may reach it). */
export type ObserveResult = { kind: 'observed'; observation: Observation } | { kind: 'failed'; reason: string; retry: boolean };

const ATTR = { NodeClass: 2, Value: 13, DataType: 14, ValueRank: 15, AccessLevel: 17, UserAccessLevel: 18 } as const;
const VALIDATED = [ATTR.NodeClass, ATTR.DataType, ATTR.ValueRank, ATTR.AccessLevel, ATTR.UserAccessLevel, ATTR.Value];
const NODE_CLASS_VARIABLE = 2;
const CURRENT_WRITE = 0x02;

/** A refusal that retrying cannot mend: the profile does not fit the server's address space. */
class Refused extends RefusedError {}

interface Item {
  key: string;
  binding: OpcuaNodeBinding;
  value: JsonValue;
}

/** A node's value as validation read it: the Variant, and as JSON (null when it could not be read). */
interface Held {
  variant: unknown;
  actual: JsonValue | null;
}

/**
 * Configuration writes to provisioned OPC UA servers over node-opcua: a
 * session with the agent's own application identity, SignAndEncrypt and the
 * server's credentials, pinned to the certificate the push left on it. A
 * configuration is validated as a whole before anything is written (every
 * node exists, is a scalar Variable of the bound data type, writable by
 * this user, and every value fits its type); then the values the server
 * does not already hold are written in one Write call (none: no Write at
 * all), and every value is read back. Outcomes are the agent's own types;
 * nothing throws.
 */
export class OpcuaConfigSessions {
  constructor(
    private readonly probe: OpcuaProbe,
    private readonly endpoints: Pick<OpcuaPushSessions, 'secureEndpoint'>,
    private readonly log: Logger,
  ) {}

  /**
   * Validates all, writes what differs, reads back: verified with the values
   * read, or failed with the reason. Values the server already holds (as the
   * read-back compares them) are not written again; when it holds them all,
   * nothing is written and the values read in validation answer verified.
   */
  async apply(server: ConfigServer, config: ConfigValues): Promise<DeliveryOutcome> {
    let items: Item[];
    try {
      items = bindings(config);
    } catch (err) {
      return { kind: 'failed', reason: (err as Error).message, retry: false };
    }
    return this.run(server, async (opcua, session) => {
      const held = await this.validate(opcua, session, items, server.timeoutMs, server.user.username);
      const changes = items.map((item, n) => ({ item, old: held[n]! })).filter(({ item, old }) => !sameValue(item.binding.dataType, item.value, old.actual));
      // A restart or a redelivery of a configuration the server holds: the device sees no second Write of it.
      if (changes.length === 0) return { kind: 'verified', observed: Object.fromEntries(items.map((i) => [i.key, i.value])) };
      const written = await within(
        session.write(changes.map(({ item }) => writeValue(opcua, item.binding, item.value))),
        server.timeoutMs,
        'the Write of the configuration',
      );
      const bad = written.map((s, n) => ({ s, item: changes[n]!.item })).filter(({ s }) => !s.isGood());
      if (bad.length > 0) {
        // Validation passed, yet the server refused some: put back what it took, so the configuration is not left half-applied.
        const taken = changes.filter((_, n) => written[n]!.isGood()).map(({ item, old }) => ({ item, old: old.variant }));
        const undo = taken.length === 0 ? 'nothing was written' : await this.restore(opcua, session, taken, server.timeoutMs);
        const why = bad.map(({ s, item }) => `${item.key} (${item.binding.nodeId}): ${s.name}`).join('; ');
        throw new Refused(`the server refused the Write of ${why}; ${undo}`);
      }
      // Every value read back, the ones not written too: the configuration is verified as a whole.
      const read = await readValues(opcua, session, items, server.timeoutMs);
      const unreadable = read.filter((r) => r.error !== undefined);
      if (unreadable.length > 0) {
        throw new PeerError(
          'OPCUA_SERVER_ERROR',
          `written, but not read back: ${unreadable.map((d) => `${d.item.key} (${d.item.binding.nodeId}) ${d.error}`).join('; ')}`,
        );
      }
      // The server took the values and holds others (it clamps or rounds them): writing again would not change that.
      const differ = read.filter((r) => !sameValue(r.item.binding.dataType, r.item.value, r.actual));
      const shown = (d: (typeof differ)[number]) =>
        `${d.item.key} (${d.item.binding.nodeId}) is ${JSON.stringify(d.actual)}, expected ${JSON.stringify(d.item.value)}`;
      if (differ.length > 0) throw new Refused(`written, but read back different: ${differ.map(shown).join('; ')}`);
      return { kind: 'verified', observed: Object.fromEntries(read.map((r) => [r.item.key, r.item.value])) };
    });
  }

  /** Reads the bound nodes back and lists what differs from `config` (a drift check): writes nothing. */
  async observe(server: ConfigServer, config: ConfigValues): Promise<ObserveResult> {
    let items: Item[];
    try {
      items = bindings(config);
    } catch (err) {
      return { kind: 'failed', reason: (err as Error).message, retry: false };
    }
    const outcome = await this.run(server, async (opcua, session) => {
      const read = await readValues(opcua, session, items, server.timeoutMs);
      const observation: Observation = { observed: {}, differences: [] };
      for (const { item, actual, error } of read) {
        const same = error === undefined && sameValue(item.binding.dataType, item.value, actual);
        // A value equal to the desired one is shown in the profile's own JSON form (a Float as written, an Int64 as given).
        observation.observed[item.key] = same ? item.value : actual;
        if (!same) observation.differences.push({ key: item.key, nodeId: item.binding.nodeId, expected: item.value, actual, ...(error ? { error } : {}) });
      }
      return { kind: 'observed' as const, observation };
    });
    return outcome;
  }

  /**
   * Opens the pinned session, runs `work`, always closes. A Refused becomes
   * failed without retry; anything else (unreachable, timeout, a session
   * refused) failed with retry.
   */
  private async run<T>(server: ConfigServer, work: (opcua: Opcua, session: Session) => Promise<T>): Promise<T | Failed> {
    let open: { opcua: Opcua; session: Session; close(): Promise<void> };
    try {
      open = await this.open(server);
    } catch (err) {
      if (err instanceof Refused) return { kind: 'failed', reason: err.message, retry: false };
      return { kind: 'failed', reason: `${server.url} not reached: ${describe(err)}`, retry: true };
    }
    try {
      return await work(open.opcua, open.session);
    } catch (err) {
      if (err instanceof Refused) return { kind: 'failed', reason: err.message, retry: false };
      return { kind: 'failed', reason: `${server.url}: ${describe(err)}`, retry: true };
    } finally {
      await open.close();
    }
  }

  private async open(server: ConfigServer): Promise<{ opcua: Opcua; session: Session; close(): Promise<void> }> {
    const choice = await this.endpoints.secureEndpoint(server.url, server.timeoutMs);
    if ('refusal' in choice) throw new Refused(choice.refusal);
    const expected = thumbprintOf(server.certificate);
    if (choice.endpoint.thumbprint !== expected) {
      // Perhaps a renewal under way, perhaps another machine at the address: either way no credentials go to it.
      throw new PeerError(
        'OPCUA_SERVER_ERROR',
        `the server presents certificate ${choice.endpoint.thumbprint}, not the one pushed to it (${expected}): nothing sent`,
      );
    }
    const { opcua, client } = await this.probe.client(server.timeoutMs, {
      securityPolicyUri: choice.endpoint.securityPolicyUri,
      serverCertificate: server.certificate,
    });
    const refusal = watchRefusal(opcua, client);
    let session: Session | undefined;
    let channelOpen = false;
    const close = () => closeClient(client, session);
    const connecting = client.connect(server.url);
    try {
      await within(connecting, server.timeoutMs, `secure channel to ${server.url}`);
      channelOpen = true;
      session = await within(
        client.createSession({ type: opcua.UserTokenType.UserName, userName: server.user.username, password: server.user.password }),
        server.timeoutMs,
        `session as ${server.user.username}`,
      );
      return { opcua, session, close };
    } catch (err) {
      if (err instanceof ProbeTimeout) abandonConnect(client, connecting);
      await close();
      const refused = channelOpen ? undefined : refusal();
      if (refused) throw new PeerError('OPCUA_SERVER_ERROR', `the server refused the secure channel with ${refused.statusName}`, { cause: err });
      throw err;
    }
  }

  /**
   * Every node checked before anything is written; the first problem of
   * each node is named, all nodes' problems in one refusal. Returns the
   * values the nodes held: as read (the Variant, to put back if the Write is
   * refused halfway) and as JSON (null when unreadable: then it is written).
   */
  private async validate(opcua: Opcua, session: Session, items: Item[], timeoutMs: number, user: string): Promise<Held[]> {
    const problems: string[] = [];
    const nodes = items.map((item) => {
      try {
        return opcua.resolveNodeId(item.binding.nodeId);
      } catch {
        problems.push(`${item.key}: ${JSON.stringify(item.binding.nodeId)} is not a NodeId`);
        return undefined;
      }
    });
    for (const item of items) {
      const why = valueRefusal(item.binding.dataType, item.value);
      if (why) problems.push(`${item.key} (${item.binding.nodeId}): ${why}`);
    }
    if (problems.length > 0) throw new Refused(`configuration refused, nothing written: ${problems.join('; ')}`);
    const read = await within(
      session.read(nodes.flatMap((nodeId) => VALIDATED.map((attributeId) => ({ nodeId: nodeId!, attributeId })))),
      timeoutMs,
      'reading the nodes to validate them',
    );
    const before = items.map((item, n) => {
      const attributes = read.slice(n * VALIDATED.length, (n + 1) * VALIDATED.length);
      const problem = nodeProblem(opcua, item.binding.dataType, attributes, user);
      if (problem) problems.push(`${item.key} (${item.binding.nodeId}): ${problem}`);
      const value = attributes[VALIDATED.length - 1];
      const actual = value?.statusCode.isGood() ? fromWire(item.binding.dataType, value.value.value) : null;
      return { variant: value?.value, actual };
    });
    if (problems.length > 0) throw new Refused(`configuration refused, nothing written: ${problems.join('; ')}`);
    return before;
  }

  /** Writes back the values (Variants as read before the Write) the nodes of `taken` held; says what came of it. */
  private async restore(opcua: Opcua, session: Session, taken: { item: Item; old: unknown }[], timeoutMs: number): Promise<string> {
    const keys = taken.map((t) => t.item.key).join(', ');
    try {
      const statuses = await within(
        session.write(
          taken.map(({ item, old }) => ({ nodeId: opcua.resolveNodeId(item.binding.nodeId), attributeId: ATTR.Value, value: { value: old as never } })),
        ),
        timeoutMs,
        'putting back the values written',
      );
      const failed = taken.filter((_, n) => !statuses[n]!.isGood()).map((t) => t.item.key);
      return failed.length === 0 ? `the values written (${keys}) were put back` : `${failed.join(', ')} could not be put back`;
    } catch (err) {
      this.log.warn({ err: describe(err) }, 'configuration half written: the values written could not be put back');
      return `the values written (${keys}) could not be put back: ${describe(err)}`;
    }
  }
}

type DataValue = import('node-opcua-client').DataValue;

/** What keeps a node from taking a value of `type` from `user`, given its attributes (in VALIDATED's order); undefined when nothing does. */
function nodeProblem(opcua: Opcua, type: OpcuaDataType, attributes: DataValue[], user: string): string | undefined {
  const [nodeClass, dataType, valueRank, access, userAccess] = attributes as [DataValue, DataValue, DataValue, DataValue, DataValue];
  if (!nodeClass.statusCode.isGood()) return `no such node (${nodeClass.statusCode.name})`;
  if (nodeClass.value.value !== NODE_CLASS_VARIABLE) return `not a Variable (NodeClass ${opcua.NodeClass[nodeClass.value.value as number]})`;
  const typeId = dataType.value.value as import('node-opcua-client').NodeId | undefined;
  // Exactly the bound built-in type: a subtype or an abstract type (Number) would let the server coerce, or refuse, what is written.
  if (typeId?.namespace !== 0 || typeId.value !== DATA_TYPE_IDS[type]) return `its data type is ${typeName(opcua, typeId)}, the profile binds ${type}`;
  const rank = valueRank.value.value as number;
  if (rank >= 0) return `holds an array (ValueRank ${rank}); a profile writes scalars`;
  if (((access.value.value as number) & CURRENT_WRITE) === 0) return 'read-only (its AccessLevel has no CurrentWrite)';
  if (userAccess.statusCode.isGood() && ((userAccess.value.value as number) & CURRENT_WRITE) === 0) {
    return `not writable by ${user} (its UserAccessLevel has no CurrentWrite)`;
  }
  return undefined;
}

/** The values with their bindings, in the order of `values`; a key without a binding refuses the configuration. */
function bindings(config: ConfigValues): Item[] {
  const unbound = Object.keys(config.values).filter((k) => !config.nodes?.[k]);
  if (unbound.length > 0) throw new Refused(`configuration refused, nothing written: no node bound for ${unbound.join(', ')}`);
  return Object.entries(config.values).map(([key, value]) => ({ key, binding: config.nodes![key]!, value }));
}

function writeValue(opcua: Opcua, binding: OpcuaNodeBinding, value: JsonValue) {
  const dataType = opcua.DataType[binding.dataType as OpcuaDataType];
  return {
    nodeId: opcua.resolveNodeId(binding.nodeId),
    attributeId: ATTR.Value,
    value: { value: { dataType, arrayType: opcua.VariantArrayType.Scalar, value: toWire(binding.dataType, value) } },
  };
}

async function readValues(opcua: Opcua, session: Session, items: Item[], timeoutMs: number) {
  const read = await within(
    session.read(items.map((i) => ({ nodeId: opcua.resolveNodeId(i.binding.nodeId), attributeId: ATTR.Value }))),
    timeoutMs,
    'reading the values back',
  );
  return items.map((item, n) => {
    const dv = read[n]!;
    if (!dv.statusCode.isGood()) return { item, actual: null, error: `not readable (${dv.statusCode.name})` };
    return { item, actual: fromWire(item.binding.dataType, dv.value.value) };
  });
}

function typeName(opcua: Opcua, id: import('node-opcua-client').NodeId | undefined): string {
  if (!id) return 'unknown';
  const builtIn = id.namespace === 0 && typeof id.value === 'number' ? opcua.DataType[id.value] : undefined;
  return builtIn ?? id.toString();
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]!.trim() : String(err);
}

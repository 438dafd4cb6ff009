import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { CaService } from '../../agent/ca/caService.js';
import { EnrollmentFlow } from '../../agent/onboarding/enrollment.js';
import { EnrollmentMetrics } from '../../agent/onboarding/enrollmentMetrics.js';
import { EnrollmentPolicy } from '../../agent/onboarding/policy.js';
import { DeviceRepository } from '../../agent/store/deviceRepository.js';
import { EnrollmentRepository } from '../../agent/store/enrollmentRepository.js';
import { SoftwareKey } from '../../certs/keys/backend.js';
import { PreparedRequest, prepare } from '../../certs/request.js';
import { buildCsr } from '../../certs/x509/csrBuilder.js';
import { encodeName } from '../../certs/x509/name.js';
import { caFixture } from '../helpers/caFixture.js';
import { tempDir } from '../helpers/daemon.js';
import { opensslCsr } from '../helpers/openssl.js';

const NAMEPLATE = { manufacturer: 'Acme', model: 'TS-1', serialNumber: 'SN-1' };
const csrFor = (cn: string) => buildCsr(SoftwareKey.generate('ec-p256'), encodeName({ commonName: cn }));

describe('issuance as one pipeline', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ca: ReturnType<typeof caFixture>;
  let flow: EnrollmentFlow;
  let enrollments: EnrollmentRepository;
  let devices: DeviceRepository;

  beforeEach(() => {
    tmp = tempDir();
    ca = caFixture(tmp.dir);
    enrollments = new EnrollmentRepository(ca.store);
    devices = new DeviceRepository(ca.store);
    // What the flow uses of CaService, over the fixture's authority and store.
    const service = {
      issue: (r: Parameters<CaService['issue']>[0]) => ca.authority.issue(r),
      current: (profile: 'mqtt-device', identity: string) => ca.repository.current(profile, identity),
      certificate: (serial: string) => {
        const record = ca.repository.get(serial);
        return record ? { record, chain: ca.authority.issuer(record.issuer).chainPem } : undefined;
      },
    } as unknown as CaService;
    flow = new EnrollmentFlow({
      log: pino({ level: 'silent' }),
      metrics: new EnrollmentMetrics(new Registry(), () => 0),
      store: ca.store,
      devices,
      enrollments,
      // A token, when a request has one, must be valid; without one the default approves.
      policy: () =>
        new EnrollmentPolicy(
          { rules: [{ kind: 'token', action: 'approve' }], default: 'approve', renewal: 'policy' },
          () => [],
          (secret) => enrollments.tokenBySecret(secret),
        ),
      ca: service,
      gate: { cutOff: async () => undefined, restore: async () => undefined },
      provisioning: (name) => `edge/prov/v1/${name}`,
      maxPending: () => 10,
      brokerUrl: () => 'mqtts://gw:8883',
      reservedIds: () => ['gw-test'],
    });
  });
  afterEach(() => {
    vi.restoreAllMocks();
    ca.close();
    tmp.cleanup();
  });

  it('parses and verifies a CSR once from request to certificate, and commits the certificate with the outcome', async () => {
    const from = vi.spyOn(PreparedRequest, 'from');
    const answer = await flow.submit('dev-1', { requestId: 'r1', csr: csrFor('dev-1'), nameplate: NAMEPLATE }, {});
    expect(from).toHaveBeenCalledTimes(1);
    expect(answer).toMatchObject({ requestId: 'r1', status: 'issued', brokerUrl: 'mqtts://gw:8883' });
    const recorded = enrollments.get('mqtt:dev-1', 'r1')!;
    expect(recorded).toMatchObject({ status: 'issued', certificateSerial: expect.any(String) });
    expect(ca.repository.current('mqtt-device', 'dev-1')?.serial).toBe(recorded.certificateSerial);
    expect(devices.byName('mqtt', 'dev-1')).toMatchObject({ state: 'provisioned', certificateSerial: recorded.certificateSerial });
  });

  it.each([
    ['another CN', async () => csrFor('dev-9'), 'REQUEST_INVALID: the CSR is for CN "dev-9", not for device dev-2'],
    ['two CNs', () => opensslCsr(tmp.dir, 'two-cns', 'ec-p256', { subject: '/CN=dev-2/CN=dev-3' }), 'REQUEST_INVALID: the CSR subject has more than one CN'],
  ])('refuses a device CSR with %s by the mqtt-device profile, recording nothing', async (_, csr, reason) => {
    const answer = await flow.submit('dev-2', { requestId: 'r1', csr: await csr(), nameplate: NAMEPLATE }, {});
    expect(answer).toEqual({ requestId: 'r1', status: 'rejected', reason });
    expect(enrollments.get('mqtt:dev-2', 'r1')).toBeUndefined();
    expect(ca.count()).toBe(0);
  });

  it('applies the CN rule to requests a device makes for itself, not to those an operator names', async () => {
    const csr = prepare(csrFor('whatever'));
    await expect(ca.authority.issue({ profile: 'mqtt-device', identity: 'dev-3', csr, origin: 'requester' })).rejects.toMatchObject({
      code: 'REQUEST_INVALID',
    });
    const issued = await ca.authority.issue({ profile: 'mqtt-device', identity: 'dev-3', csr });
    expect(issued.record.subject).toBe('O=Test Plant, CN=dev-3');
  });

  it('records nothing of a certificate whose alongside work fails; a certificate in the same grouped commit stays', async () => {
    const failing = ca.authority.issue({
      profile: 'mqtt-device',
      identity: 'dev-4',
      csr: prepare(csrFor('dev-4')),
      alongside: () => {
        enrollments.createToken('written, then undone', 1, new Date(Date.now() + 60_000));
        throw new Error('the request was withdrawn');
      },
    });
    const kept: string[] = [];
    const other = ca.authority.issue({ profile: 'mqtt-device', identity: 'dev-5', csr: prepare(csrFor('dev-5')), alongside: (r) => kept.push(r.serial) });
    await expect(failing).rejects.toThrow('the request was withdrawn');
    const issued = await other;
    expect(kept).toEqual([issued.record.serial]);
    expect(enrollments.tokens()).toEqual([]);
    expect(ca.repository.current('mqtt-device', 'dev-4')).toBeUndefined();
    expect(ca.count()).toBe(1);
  });

  it('runs the alongside work with the certificate issued before when a request is repeated', async () => {
    const csr = prepare(csrFor('dev-6'));
    const first = await ca.authority.issue({ profile: 'mqtt-device', identity: 'dev-6', csr });
    const seen: string[] = [];
    const again = await ca.authority.issue({ profile: 'mqtt-device', identity: 'dev-6', csr, alongside: (r) => seen.push(r.serial) });
    expect(again.repeated).toBe(true);
    expect(seen).toEqual([first.record.serial]);
  });

  it("records a request approved and issued in the certificate's commit as issued, with one change of the device straight to provisioned", async () => {
    const answer = await flow.submit('dev-7', { requestId: 'r1', csr: csrFor('dev-7'), nameplate: NAMEPLATE }, {});
    expect(answer).toMatchObject({ status: 'issued' });
    const recorded = enrollments.get('mqtt:dev-7', 'r1')!;
    expect(recorded).toMatchObject({ status: 'issued', decidedBy: 'default', certificateSerial: expect.any(String), decidedAt: recorded.receivedAt });
    expect(devices.events('mqtt:dev-7').map((e) => [e.from, e.to, e.actor, e.cause])).toEqual([
      [undefined, 'provisioned', 'policy', `enrollment request r1 approved (default): certificate ${recorded.certificateSerial} issued`],
    ]);
    expect(devices.byName('mqtt', 'dev-7')).toMatchObject({ revision: 1, source: { protocol: 'mqtt', provisioning: 'edge/prov/v1/dev-7' } });
  });

  it("gives a token's last use to one of two requests in the same grouped commit; the other is rejected, nothing of its certificate kept", async () => {
    const { token, record } = enrollments.createToken('one use', 1, new Date(Date.now() + 60_000));
    const [a, b] = await Promise.all(
      ['dev-8', 'dev-9'].map((name) => flow.submit(name, { requestId: 'r1', csr: csrFor(name), nameplate: NAMEPLATE, enrollmentToken: token }, {})),
    );
    const answers = [a, b].map((x) => x!.status).sort();
    expect(answers).toEqual(['issued', 'rejected']);
    const loser = a!.status === 'rejected' ? 'dev-8' : 'dev-9';
    expect([a, b].find((x) => x!.status === 'rejected')!.reason).toBe(`enrollment token ${record.id} was used up meanwhile`);
    expect(enrollments.tokens()[0]).toMatchObject({ uses: 1 });
    expect(ca.repository.current('mqtt-device', loser)).toBeUndefined();
    expect(ca.count()).toBe(1);
    expect(enrollments.get(`mqtt:${loser}`, 'r1')).toMatchObject({ status: 'rejected', tokenId: record.id });
    expect(devices.byName('mqtt', loser)).toMatchObject({ state: 'rejected' });
  });

  it("records a certificate the CA refuses as the CA's rejection, and uses up a technician's pre-approval", async () => {
    const key = SoftwareKey.generate('ec-p256');
    expect(await flow.submit('dev-10', { requestId: 'r1', csr: buildCsr(key, encodeName({ commonName: 'dev-10' })), nameplate: NAMEPLATE }, {})).toMatchObject({
      status: 'issued',
    });
    ca.store.transaction(() =>
      devices.apply({ protocol: 'mqtt', name: 'dev-11', to: 'discovered', cause: 'seen', actor: 'discovery', patch: { preapproved: true } }),
    );
    // The same key under another id: a clone, which the CA refuses.
    const clone = await flow.submit('dev-11', { requestId: 'r1', csr: buildCsr(key, encodeName({ commonName: 'dev-11' })), nameplate: NAMEPLATE }, {});
    expect(clone).toMatchObject({ status: 'rejected', reason: expect.stringMatching(/^KEY_BOUND_TO_OTHER_IDENTITY: /) });
    expect(enrollments.get('mqtt:dev-11', 'r1')).toMatchObject({ status: 'rejected', decidedBy: 'technician' });
    expect(devices.byName('mqtt', 'dev-11')).toMatchObject({ state: 'rejected', preapproved: false });
    expect(devices.events('mqtt:dev-11').map((e) => [e.from, e.to, e.actor, e.cause])).toEqual([
      [undefined, 'discovered', 'discovery', 'seen'],
      ['discovered', 'rejected', 'ca', 'certificate refused: KEY_BOUND_TO_OTHER_IDENTITY'],
    ]);
    expect(ca.repository.current('mqtt-device', 'dev-11')).toBeUndefined();
  });
});

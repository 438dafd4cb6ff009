import { verify, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigFileError } from '../errors.js';

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
const MAX_DEPTH = 4;

/** Reads a PEM bundle of manufacturer CA certificates; every block must be a CA certificate. */
export function loadManufacturerCas(file: string): X509Certificate[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigFileError(`manufacturer CA file ${file} cannot be read: ${(err as Error).message}`);
  }
  const blocks = text.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) throw new ConfigFileError(`manufacturer CA file ${file} holds no PEM certificate`);
  return blocks.map((pem, i) => {
    const cert = new X509Certificate(pem);
    if (!cert.ca) throw new ConfigFileError(`certificate ${i + 1} in ${file} (${cert.subject.replace(/\n/g, ', ')}) is not a CA certificate`);
    return cert;
  });
}

export type ClaimResult = { ok: true; subject: string; serialNumber?: string } | { ok: false; reason: string };

/** The subject's serialNumber attribute (2.5.4.5), where IEEE 802.1AR puts the device serial. */
function subjectSerial(cert: X509Certificate): string | undefined {
  const line = cert.subject.split('\n').find((l) => l.startsWith('serialNumber='));
  return line?.slice('serialNumber='.length);
}

/**
 * A manufacturer claim: an IDevID certificate that chains to one of the
 * configured manufacturer CAs and is valid now, plus a signature over the
 * CSR (its DER bytes) made with the IDevID's key. The signature binds the
 * request to the key the manufacturer put in the device; a copied IDevID
 * certificate without its key cannot produce it. When the IDevID names a
 * serial number, it must be the one on the nameplate.
 */
export function verifyClaim(
  claim: { certificate: string; signature: string },
  csrDer: Buffer,
  nameplateSerial: string,
  cas: readonly X509Certificate[],
  now: Date = new Date(),
): ClaimResult {
  let idevid: X509Certificate;
  try {
    idevid = new X509Certificate(claim.certificate);
  } catch {
    return { ok: false, reason: 'claim certificate is not a readable X.509 certificate' };
  }
  if (idevid.ca) return { ok: false, reason: 'claim certificate is a CA certificate, not a device identity' };
  if (now < new Date(idevid.validFrom) || now > new Date(idevid.validTo)) {
    return { ok: false, reason: `claim certificate is not valid now (valid ${idevid.validFrom} to ${idevid.validTo})` };
  }
  if (!chainsTo(idevid, cas, now)) return { ok: false, reason: 'claim certificate does not chain to a configured manufacturer CA' };
  const signature = Buffer.from(claim.signature, 'base64');
  let good = false;
  try {
    good = verify('sha256', csrDer, idevid.publicKey, signature);
  } catch {
    good = false;
  }
  if (!good) return { ok: false, reason: 'claim signature over the CSR does not verify with the claim certificate key' };
  const serial = subjectSerial(idevid);
  if (serial !== undefined && serial !== nameplateSerial) {
    return { ok: false, reason: `claim certificate is for serial number ${JSON.stringify(serial)}, the nameplate says ${JSON.stringify(nameplateSerial)}` };
  }
  return { ok: true, subject: idevid.subject.replace(/\n/g, ', '), ...(serial !== undefined ? { serialNumber: serial } : {}) };
}

function chainsTo(cert: X509Certificate, cas: readonly X509Certificate[], now: Date, depth = 0): boolean {
  if (depth >= MAX_DEPTH) return false;
  for (const ca of cas) {
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) continue;
    if (now < new Date(ca.validFrom) || now > new Date(ca.validTo)) continue;
    // A self-signed CA in the file is an anchor; an intermediate in the file is trusted too, as configured.
    return true;
  }
  return false;
}

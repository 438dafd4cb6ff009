import { CertError } from './errors.js';
import type { IssuingCa } from './issuer.js';
import type { Profile, ProfileTemplate } from './profiles/profile.js';
import { children, expectTag, read, Tag } from './x509/der.js';
import { parseExtensions } from './x509/extensions.js';

/**
 * Checks a to-be-signed certificate, decoded back from its DER, against the
 * profile before it is signed: a leaf that is not a CA, validity inside the
 * issuer's, the required SANs, exactly the profile's key usages. It reads
 * the encoding rather than the builder's inputs, so a builder bug cannot
 * pass unseen.
 */
export function lintTbs(tbs: Buffer, notBefore: Date, notAfter: Date, profile: Profile, template: ProfileTemplate, issuer: IssuingCa): void {
  const problems: string[] = [];
  const parts = children(read(tbs));
  const extensionsNode = parts.find((p) => p.tag === 0xa3);
  const ext = parseExtensions(extensionsNode ? expectTag(extensionsNode, 0xa3, 'extensions') : undefined);
  if (ext.ca) problems.push('leaf certificate has CA:TRUE');
  if (ext.keyUsage.includes('keyCertSign') || ext.keyUsage.includes('cRLSign')) problems.push('leaf certificate may sign certificates or CRLs');
  const want = [...template.keyUsage].sort().join(',');
  if ([...ext.keyUsage].sort().join(',') !== want) problems.push(`key usage ${ext.keyUsage.join(',')} is not the profile's ${want}`);
  if ([...ext.extKeyUsage].sort().join(',') !== [...template.extKeyUsage].sort().join(',')) problems.push('extended key usage differs from the profile');
  if (notBefore < issuer.notBefore || notAfter > issuer.notAfter) problems.push("validity is not inside the issuer's");
  if (notAfter > issuer.chainNotAfter) problems.push('validity outlasts a CA above the issuer');
  if (notAfter <= notBefore) problems.push('validity ends before it begins');
  for (const required of profile.requiredSans) {
    if (required === 'uri' && ext.san.uris.length === 0) problems.push('required SAN URI missing');
    if (required === 'dns-or-ip' && ext.san.dnsNames.length + ext.san.ipAddresses.length === 0) problems.push('required SAN DNS name or IP missing');
  }
  if (template.san?.uris?.some((u) => !ext.san.uris.includes(u))) problems.push('SAN URI differs from the identity');
  const issuerNode = parts[3];
  if (!issuerNode || issuerNode.tag !== Tag.sequence || !issuerNode.raw.equals(issuer.subjectName)) problems.push('issuer name is not the CA subject');
  if (problems.length > 0) {
    throw new CertError('LINT_FAILED', `certificate failed lint for profile ${profile.name}: ${problems.join('; ')}`, { details: { problems } });
  }
}

import type { DeviceConfiguration } from '../store/deviceDetails.js';

const configurationText = (c: DeviceConfiguration): string => `${c.profile ?? '(none)'}${c.version ? ` v${c.version}` : ''}: ${c.status}`;

/** The configuration lines of `devices show` (dates arrive as text from the API). */
export function deviceConfigurationLine(c: DeviceConfiguration | undefined): string {
  const labels = Object.entries(c?.labels ?? {});
  // Nothing to say of a device no profile reaches, unpinned and unlabelled.
  if (!c || (c.status === 'none' && !c.pinned && labels.length === 0)) return '';
  const when = (d: Date | string | null) => (d ? new Date(d).toISOString() : '');
  return [
    `  configuration: ${configurationText(c)}${c.pinned ? ` (pinned to ${c.pinned})` : ''}${c.error ? `: ${c.error}` : ''}`,
    c.reportedVersion ? `, reported v${c.reportedVersion} at ${when(c.reportedAt)}` : '',
    c.checkedAt ? `, checked ${when(c.checkedAt)}` : '',
    labels.length > 0 ? `\n  labels: ${labels.map(([k, v]) => `${k}=${v}`).join(' ')}` : '',
  ].join('');
}

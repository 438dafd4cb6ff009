/**
 * The ACL files of the external Mosquitto. `edge-agent broker
 * mosquitto-config` writes them first; the running agent rewrites the
 * devices file (after the CRL) whenever the set of cut-off devices or the
 * CRL changes and has Mosquitto reread both (SIGHUP), which applies to
 * connected clients at once.
 */
export function provisioningAcl(prefix: string): string {
  return [
    '# Provisioning listener (no client certificate): a client may publish only its own',
    '# request and read only its own response (or an MQTT 5 response topic below it);',
    '# %c is its client id (the device id).',
    `pattern write ${prefix}/%c/request`,
    `pattern read ${prefix}/%c/response/#`,
    '',
  ].join('\n');
}

/**
 * Mutual-TLS listener. Every device (%u is the CN of its certificate) gets
 * its own namespace through patterns, so a newly issued certificate works at
 * once without a reload. A device cut off (revoked, decommissioned) gets a
 * `topic deny #` of its own: Mosquitto checks a user's deny entries before
 * any pattern, so it can neither publish nor receive on a connection it
 * still holds (Mosquitto applies a reloaded ACL to open connections). New
 * connections are refused at the TLS handshake by the CRL, which Mosquitto
 * 2.0 rereads on the same SIGHUP.
 *
 * Configuration (`configRoot` is configuration.topicRoot): the agent writes
 * every device's `<root>/<id>/desired` (retained) and reads every
 * `<root>/<id>/reported`; a device reads only its own desired topic and
 * writes only its own reported topic. Mosquitto checks read access again on
 * every delivery, so a wildcard subscription gets no other device's desired
 * configuration.
 */
export function devicesAcl(agentId: string, prefix: string, cutOff: readonly string[], configRoot = 'config'): string {
  const lines = [
    '# Written by edge-agent; rewritten when a device is revoked or decommissioned. Do not edit.',
    '# Mutual-TLS listener: %u is the CN of the client certificate, issued by the gateway CA.',
    `# The agent (${agentId}) reads every enrollment request and answers it, sees device traffic and announcements.`,
    `user ${agentId}`,
    `topic read ${prefix}/+/request`,
    `topic write ${prefix}/+/response/#`,
    'topic read devices/#',
    'topic read spBv1.0/#',
    'topic read homie/#',
    'topic read homeassistant/#',
    `topic write ${configRoot}/+/desired`,
    `topic read ${configRoot}/+/reported`,
    '',
  ];
  for (const identity of [...cutOff].sort()) {
    if (identity === agentId) continue;
    lines.push(`user ${identity}`, 'topic deny #', '');
  }
  lines.push(
    '# Every device: its own namespace, its announcements under its own id, and its own provisioning topics (renewal).',
    'pattern readwrite devices/%u/#',
    'pattern write spBv1.0/+/+/%u/#',
    'pattern write homie/%u/#',
    'pattern write homeassistant/+/%u/#',
    `pattern write ${prefix}/%u/request`,
    `pattern read ${prefix}/%u/response/#`,
    '# Configuration: its own desired configuration (retained, written by the agent only) and its own report.',
    `pattern read ${configRoot}/%u/desired`,
    `pattern write ${configRoot}/%u/reported`,
    '',
  );
  return lines.join('\n');
}

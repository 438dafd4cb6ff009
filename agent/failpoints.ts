/**
 * Fault injection for the crash tests: with EDGE_AGENT_FAILPOINT=<name>,
 * the process kills itself with SIGKILL when it reaches that point, as a
 * power cut would stop it there. Unset (always, outside tests), it does
 * nothing. Points: opcua.push.after-update (UpdateCertificate answered,
 * ApplyChanges not sent); enrollment.issue.after-commit (an enrollment's
 * certificate and outcome committed, the broker not opened, no answer sent);
 * configuration.publish.before (an MQTT device's desired configuration
 * committed, its retained message not yet published).
 */
export function failpoint(name: string): void {
  if (process.env.EDGE_AGENT_FAILPOINT === name) process.kill(process.pid, 'SIGKILL');
}

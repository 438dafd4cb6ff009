/**
 * The id rule for devices, the gateway and the broker: it becomes a
 * certificate's CN, an MQTT topic level, a file name and a URL path segment
 * (upstream). 1 to 64 characters from A-Z a-z 0-9 . _ -, and not `.` or
 * `..`, which mean "this" and "the parent" in every path and URL they land
 * in. The agent imports this rule; certs/ owns it because certs/ imports
 * nothing from the agent.
 */
export const DEVICE_ID_PATTERN = /^(?!\.\.?$)[A-Za-z0-9._-]{1,64}$/;

/** The rule in words, for error messages. */
export const DEVICE_ID_RULE = '1 to 64 characters from A-Z a-z 0-9 . _ -, not "." or ".."';

/**
 * What the agent needs to know of a directory account, in the agent's own
 * types (ldapts types stop at agent/transport/ldap.ts).
 */
export interface DirectoryAccount {
  /** objectGUID as 32 lowercase hex digits: stable across renames and moves. */
  guid: string;
  dn: string;
  /** The login name (the configured loginAttribute, sAMAccountName by default). */
  name: string;
  upn?: string;
  displayName?: string;
  /** userAccountControl bit 0x2. */
  disabled: boolean;
  /** Locked out (msDS-User-Account-Control-Computed bit 0x10, else lockoutTime > 0). */
  locked: boolean;
  /** accountExpires, when set (0 and 0x7FFFFFFFFFFFFFFF mean never). */
  expiresAt?: Date;
  /**
   * The groups the account is in, nested membership included
   * (LDAP_MATCHING_RULE_IN_CHAIN), each by DN and sAMAccountName. At login
   * every group; at a recheck only the mapped groups it was asked about.
   */
  groups: { dn: string; name: string }[];
}

/** Why a login was refused by the directory itself (never more detail than this reaches a client). */
export type LoginRefusal = 'bad-credentials' | 'no-such-user' | 'ambiguous' | 'disabled' | 'expired' | 'locked' | 'password-expired';

/**
 * The directory the gateway's people come from. Every call opens its own
 * connection (LDAPS, or LDAP with StartTLS before anything else), checks
 * the server's certificate and name, and is bounded by the configured
 * timeouts. Failures are AgentErrors with the code DIRECTORY_UNAVAILABLE
 * (cannot connect, timed out, server busy), DIRECTORY_CERTIFICATE (TLS
 * refused: untrusted chain or wrong name) or LOGIN_FAILED (with a
 * LoginRefusal as `refusal`).
 */
export interface Directory {
  /**
   * Checks a name (login attribute or UPN) and password: the account found
   * by the service account (or by the user's own bind without one), then a
   * bind as that account's DN with the password. An empty password never
   * reaches the directory (an unauthenticated bind would succeed).
   */
  login(name: string, password: string): Promise<DirectoryAccount>;
  /**
   * The accounts of these GUIDs now (an absent GUID: the account is gone),
   * each with those of `groups` (names or DNs of mapped groups) it is in,
   * nested included. Needs the service account. Costs 1 + groups.length
   * searches per 200 GUIDs, however many sessions.
   */
  recheck(guids: readonly string[], groups: readonly string[]): Promise<Map<string, DirectoryAccount>>;
  /** Whether rechecks are possible (a service account is configured). */
  readonly canRecheck: boolean;
  /** Reads the files the settings name (CA, service password), as a call would; throws CONFIG_FILE_UNUSABLE with the reason. */
  checkFiles?(): void;
}

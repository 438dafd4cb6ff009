/**
 * What the sync needs of a receiver: the three routes of the upstream
 * contract (docs/upstream-api.md) and a way to let go of connections. An
 * adapter for a CMMS product that does not speak the contract implements
 * these methods in one file, answering as the contract's receiver
 * would (status, headers, JSON body); UpstreamClient is the one for
 * receivers that speak it.
 */
export interface UpstreamAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Which credentials the request went with (tokenVersion when it was sent). */
  tokenVersion?: number;
}

export interface UpstreamAdapter {
  /** POST .../devices:batch with this Idempotency-Key and body. Rejects only when no answer came (UpstreamUnreachable). */
  postBatch(idempotencyKey: string, body: string): Promise<UpstreamAnswer>;
  /** POST .../events:batch with this body (`{"events":[...]}`). Rejects only when no answer came (UpstreamUnreachable). */
  postEvents(body: string): Promise<UpstreamAnswer>;
  /** GET .../devices?cursor=&limit=. */
  listDevices(cursor: string | undefined, limit: number): Promise<UpstreamAnswer>;
  /** Reads credentials again (after a 401); whether they changed. */
  rereadToken(): boolean;
  /** Grows each time the credentials change: a 401 for an older version is not a refusal of the current one. */
  readonly tokenVersion: number;
  close(): void;
}

import type { Migration } from '../migrate.js';

/**
 * The CRL reason of a queued revoke or decommission in a column of its own
 * (NULL for approve and reject), so the daemon never reads it back out of
 * the free text. Until now the text held both, as "keyCompromise: stolen
 * from line 3" (or only the reason, or nothing): each queued revoke and
 * decommission is converted here, once, where that format is known. The
 * reason comes off the front of the text, which keeps only the note; a
 * text without a known reason in front (queued before reasons were
 * checked) stays as it was, with its kind's default reason (unspecified for
 * revoke, cessationOfOperation for decommission), as the daemon read it.
 */
export const m0010ActionCrlReason: Migration = {
  version: 10,
  name: 'device action crl reason',
  sql: `
    ALTER TABLE device_actions ADD COLUMN crl_reason TEXT
      CHECK (crl_reason IS NULL OR (action IN ('revoke', 'decommission')
        AND crl_reason IN ('unspecified', 'keyCompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation', 'privilegeWithdrawn')));

    WITH reasons (name) AS (VALUES ('unspecified'), ('keyCompromise'), ('affiliationChanged'), ('superseded'), ('cessationOfOperation'), ('privilegeWithdrawn'))
    UPDATE device_actions SET crl_reason = coalesce(
        (SELECT name FROM reasons WHERE device_actions.reason = name OR substr(device_actions.reason, 1, length(name) + 2) = name || ': '),
        CASE action WHEN 'decommission' THEN 'cessationOfOperation' ELSE 'unspecified' END)
      WHERE action IN ('revoke', 'decommission');

    UPDATE device_actions SET reason = CASE
        WHEN reason = crl_reason THEN ''
        WHEN substr(reason, 1, length(crl_reason) + 2) = crl_reason || ': ' THEN substr(reason, length(crl_reason) + 3)
        ELSE reason END
      WHERE crl_reason IS NOT NULL;
  `,
};

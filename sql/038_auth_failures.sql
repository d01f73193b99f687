-- 038: failed authentications counted on their own (issue 14, items 6 and 9).
-- A wrong password or an unknown account no longer uses the per-account and per-phone
-- request quotas (an attacker could lock the owner out with them); it counts in two kinds of
-- rate-limit counters of its own: 'auth_client' (failures from one client address) and
-- 'auth_account' (failures against one account from one client address, key
-- '<account> <client>'), so a correct password from another client still gets through.

ALTER TABLE rate_limit_counters DROP CONSTRAINT rate_limit_counters_kind_check;
ALTER TABLE rate_limit_counters ADD CONSTRAINT rate_limit_counters_kind_check
    CHECK (kind IN ('client', 'phone', 'account', 'auth_client', 'auth_account'));

-- Hosted IVR identification failures per account and per called-back number, across calls
-- and nodes: a caller who hangs up after each wrong PIN and calls again still meets the
-- lockout. key is 'phone:<digits>' or 'account:<id>' (as ivr_lockouts); a count older than
-- the lockout period starts again from one.
CREATE TABLE ivr_failures (
    key      text        PRIMARY KEY,
    failures integer     NOT NULL CHECK (failures > 0),
    since    timestamptz NOT NULL
);

COMMENT ON TABLE ivr_failures IS
    'Failed hosted IVR identifications per account/number since "since"; reaching [limits] '
    'ivr_attempts locks the key out (ivr_lockouts)';

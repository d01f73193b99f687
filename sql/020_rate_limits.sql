-- 020: abuse protection shared by every node: rate-limit counters and callbacks in progress.
-- Counters are fixed windows: one row per (kind, key, window start), incremented atomically
-- with INSERT ... ON CONFLICT DO UPDATE ... RETURNING, so nodes on one database agree.
-- window_start is in seconds since the epoch, computed by the caller from its (injected) clock.

CREATE TABLE rate_limit_counters (
    kind         text    NOT NULL CHECK (kind IN ('client', 'phone', 'account')),
    key          text    NOT NULL,
    window_start bigint  NOT NULL,
    hits         integer NOT NULL CHECK (hits >= 0),
    PRIMARY KEY (kind, key, window_start)
);

CREATE INDEX rate_limit_counters_window ON rate_limit_counters (window_start);

COMMENT ON TABLE rate_limit_counters IS
    'Callback requests per client address, called-back number and account, per fixed window';

-- One row per callback being started or in progress, per account: the concurrency cap counts
-- them. The web layer takes a slot before starting a callback (under an advisory lock on the
-- account) and binds it to the callback id once the service accepted it. A bound slot counts
-- while that callback (callback_sessions) is not final and its node is alive; an unbound one
-- for a minute. Slots that no longer count are deleted when the account takes its next slot.

CREATE TABLE callback_slots (
    slot_id      uuid    PRIMARY KEY,
    account_id   text    NOT NULL,
    callback_id  text    UNIQUE,
    taken_at     bigint  NOT NULL
);

CREATE INDEX callback_slots_account ON callback_slots (account_id);

COMMENT ON TABLE callback_slots IS
    'Callbacks in progress per account, for the concurrent_per_account cap';

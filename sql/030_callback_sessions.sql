-- 030: callback sessions and IVR lockouts.
-- Every callback's progress is kept here (not only in the memory of the node running it), so
-- any node can answer GET /api/v1/callbacks/{id} and count the callbacks an account has in
-- progress. state holds the JSON status the page shows.

CREATE TABLE callback_sessions (
    id           text        PRIMARY KEY,
    application  text        NOT NULL,
    mode         text        NOT NULL CHECK (mode IN ('simple', 'extended', 'hosted')),
    account_id   text,
    phone        text        NOT NULL,
    destination  text,
    status       text        NOT NULL,
    state        jsonb       NOT NULL,
    node         text        NOT NULL,
    instance_id  uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Callbacks in progress per account (the concurrency cap).
CREATE INDEX callback_sessions_open_by_account ON callback_sessions (account_id)
    WHERE status NOT IN ('ended', 'refused');
CREATE INDEX callback_sessions_created ON callback_sessions (created_at);

-- Hosted IVR lockouts after repeated failed identification: key is 'phone:<digits>' or
-- 'account:<id>'.
CREATE TABLE ivr_lockouts (
    key          text        PRIMARY KEY,
    locked_until timestamptz NOT NULL
);

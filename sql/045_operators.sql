-- 045: operators of the web console (issue 15): named users, their sessions, failed logins.
--
-- An operator logs in to the console (/ui/ on the admin endpoint) with a name and a password
-- (a salted scrypt hash, cbserver.billing.passwords format). Roles: 'admin' may change
-- everything the console shows, 'readonly' may only look. Operators are made with
-- `cbserver operator add` and never deleted (the audit log names them): they are disabled.
CREATE TABLE operators (
    name                text        PRIMARY KEY
                        CHECK (name ~ '^[a-z][a-z0-9._-]{0,62}$'),
    role                text        NOT NULL CHECK (role IN ('admin', 'readonly')),
    password_hash       text        NOT NULL,
    disabled            boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

-- Server-side sessions, in the database so that every node behind a load balancer accepts a
-- session any node opened. The browser's cookie holds a random id; only its SHA-256 is
-- stored, so a copy of this table opens no session. csrf_token is the session's
-- synchroniser token that every state-changing form carries. A session unused for the
-- console's idle timeout is over (judged by the database's clock, the same for every node).
CREATE TABLE operator_sessions (
    id_hash     text        PRIMARY KEY,
    operator    text        NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf_token  text        NOT NULL,
    client      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator);
CREATE INDEX operator_sessions_used_at ON operator_sessions (used_at);

-- Failed console logins per key, 'operator:<name>' or 'client:<address>', since "since": a
-- count older than the lockout period starts again from one (as ivr_failures, sql/038). A
-- key at its limit refuses logins, the right password included, until the period is over.
CREATE TABLE operator_login_failures (
    key      text        PRIMARY KEY,
    failures integer     NOT NULL CHECK (failures > 0),
    since    timestamptz NOT NULL
);

COMMENT ON TABLE operators IS 'Web console users (cbserver operator add); roles admin, readonly';
COMMENT ON TABLE operator_sessions IS 'Console sessions: SHA-256 of the cookie id, CSRF token, last use';
COMMENT ON TABLE operator_login_failures IS 'Failed console logins per operator and per client address';

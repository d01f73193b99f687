-- 011: call detail records, one row per leg of a callback (failed legs included).
-- Written together with the balance change and the reservation release, in one
-- transaction; UNIQUE (session_id, leg) makes a replay or retry a no-op.

CREATE TABLE xdrs (
    id               bigserial     PRIMARY KEY,
    session_id       text          NOT NULL,
    leg              char(1)       NOT NULL CHECK (leg IN ('A', 'B')),
    account_id       text          NOT NULL,
    customer_id      text,
    cli              text          NOT NULL,
    cld              text          NOT NULL,
    access_code      text          NOT NULL DEFAULT '',
    node             text          NOT NULL,
    tariff_id        bigint,
    tariff_name      text,
    prefix           text,
    rate_id          bigint,
    rate_version     integer,
    peak             boolean,
    connect_time     timestamptz(3),
    disconnect_time  timestamptz(3) NOT NULL,
    duration         integer       NOT NULL CHECK (duration >= 0),
    charged_seconds  integer       NOT NULL CHECK (charged_seconds >= 0),
    amount           numeric(20,5) NOT NULL CHECK (amount >= 0),
    currency         char(3)       NOT NULL,
    sip_code         integer,
    sip_reason       text          NOT NULL DEFAULT '',
    trigger_mode     text          NOT NULL CHECK (trigger_mode IN ('simple', 'extended', 'hosted')),
    balance_after    numeric(20,5),
    recorded_at      timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT xdrs_session_leg UNIQUE (session_id, leg),
    CONSTRAINT xdrs_connected_has_time CHECK (duration = 0 OR connect_time IS NOT NULL)
);

CREATE INDEX xdrs_account_time ON xdrs (account_id, disconnect_time);
CREATE INDEX xdrs_disconnect_time ON xdrs (disconnect_time);

COMMENT ON TABLE xdrs IS 'One row per callback leg; amount in the tariff currency, 5 decimals';
COMMENT ON COLUMN xdrs.balance_after IS
    'Balance of the charged balance (account or customer) right after this leg was applied';

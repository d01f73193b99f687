-- 010: balance reservations of open callback calls.
-- A call reserves, per leg, the most it can cost (its maximum duration priced by its rate)
-- before it is placed. Reservations are taken while holding the row lock of the balance
-- they draw on (the account's, or the customer's for a subordinate account), so several
-- cbserver processes on one database cannot together promise more than the balance allows.
-- A reservation is released in the transaction that writes its leg's xDR. One whose process
-- (server_nodes.instance_id) has not been seen for longer than the expiry the server states
-- (60 s by default), or has stopped, is ignored and may be deleted by anyone.

CREATE TABLE balance_reservations (
    session_id  text          NOT NULL,
    leg         char(1)       NOT NULL CHECK (leg IN ('A', 'B')),
    account_id  text          NOT NULL,
    owner_key   text          NOT NULL,  -- 'account:<id>' or 'customer:<id>': the balance used
    amount      numeric(20,5) NOT NULL CHECK (amount >= 0),
    currency    char(3)       NOT NULL,
    instance_id uuid          NOT NULL,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, leg)
);

CREATE INDEX balance_reservations_owner ON balance_reservations (owner_key);
CREATE INDEX balance_reservations_instance ON balance_reservations (instance_id);

COMMENT ON TABLE balance_reservations IS
    'Money held for open calls; released when the leg''s xDR is written';

-- 033: payments (recharges) and refunds of account and customer balances.
--
-- Until now a balance could only be charged: a debit account started at its opening balance
-- and a prepaid customer had no way to hold money. A payment adds money; a refund (a
-- correction of a mistaken payment, or money given back) takes it out again. Rows are never
-- changed or deleted: a mistake is corrected by a refund row, so the table is the full record
-- of every movement that was not a call (xdrs hold the calls).
--
-- Sign convention: amount is always > 0 and kind says the direction. What that does to the
-- stored balance depends on what the balance means (see 002):
--   * debit account (balance = money left):      payment +amount, refund -amount
--   * credit account (balance = amount owed):     payment -amount, refund +amount
--   * customer (balance = amount owed; a prepaid customer's money is a negative balance):
--                                                 payment -amount, refund +amount
-- so a payment always makes what the balance may spend grow by exactly amount.
-- balance_after is the owner's balance right after the row was applied (as in xdrs).
--
-- A payment to an account is a "recharge" for the manual's availability rule ("the number of
-- days the account remains active after its first use or recharge" / "after its last use or
-- recharge"): accounts.first_recharge / last_recharge record it, and the account read of
-- authorization (cb_account_for_call) counts the availability periods from the first use or
-- recharge and from the last use or recharge. first_usage/last_usage stay call usage only.

CREATE TABLE payments (
    id            bigserial PRIMARY KEY,
    account_id    text NULL REFERENCES accounts (id) ON DELETE RESTRICT,
    customer_id   integer NULL REFERENCES customers (id) ON DELETE RESTRICT,
    kind          text NOT NULL DEFAULT 'payment' CHECK (kind IN ('payment', 'refund')),
    amount        numeric NOT NULL CHECK (amount > 0),
    currency      char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance_after numeric NOT NULL,
    note          text NOT NULL DEFAULT '' CHECK (length(note) <= 500),
    made_by       text NOT NULL CHECK (made_by <> ''),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- exactly one balance owner: an individual account, or a customer
    CHECK (num_nonnulls(account_id, customer_id) = 1)
);

CREATE INDEX payments_account ON payments (account_id, id) WHERE account_id IS NOT NULL;
CREATE INDEX payments_customer ON payments (customer_id, id) WHERE customer_id IS NOT NULL;

COMMENT ON TABLE payments IS
    'Payments (recharges) and refunds of account and customer balances; append-only';
COMMENT ON COLUMN payments.amount IS
    'Always > 0; kind gives the direction (payment adds spendable money, refund removes it)';

-- Append-only: the record of money received must not be rewritten. (TRUNCATE and dropping
-- the table stay possible for an operator who means it.)
CREATE FUNCTION payments_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'payments are append-only: record a refund instead of changing payment %',
        OLD.id USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER payments_append_only BEFORE UPDATE OR DELETE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_append_only();

ALTER TABLE accounts ADD COLUMN first_recharge timestamptz NULL,
                     ADD COLUMN last_recharge timestamptz NULL;

COMMENT ON COLUMN accounts.last_recharge IS
    'When the account was last recharged (a payment); availability after last use counts from it too';

-- This migration also replaced cb_account_for_call (031) so that its first_usage and
-- last_usage mean "first use or recharge" and "last use or recharge". The function now lives
-- in sql/functions/50_cb_account_for_call.sql, which `cbserver db upgrade` applies after the
-- numbered migrations; a database that ran this file as first shipped (checksum 53aa371f...,
-- accepted by cbserver/db/migrations.py SUPERSEDED) ends up with the same function.

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

-- cb_account_for_call (031) again, the same signature and columns; only its first_usage and
-- last_usage now mean "first use or recharge" and "last use or recharge" (least/greatest
-- skip NULLs), which is what authorize.account_refusal and usable_seconds count from.
CREATE OR REPLACE FUNCTION cb_account_for_call(p_account text, p_session text, p_expiry integer,
                                               p_node text, p_codes text[])
RETURNS TABLE (id text, customer_id integer, product_id integer, account_type text,
               balance_control text, balance numeric, credit_limit numeric, status text,
               activation_date timestamptz, expiration_date timestamptz,
               avail_after_first_use_days integer, avail_after_last_use_days integer,
               first_usage timestamptz, last_usage timestamptz, password_hash text,
               internal boolean, voice boolean, customer_balance_control text,
               customer_balance numeric, customer_credit_limit numeric, customer_currency text,
               product_currency text, reserved numeric, open_calls bigint, entries json)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    k text;
BEGIN
    SELECT CASE WHEN a.balance_control = 'subordinate' THEN 'customer:' || a.customer_id
                ELSE 'account:' || a.id END
      INTO k FROM accounts a WHERE a.id = p_account;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT a.id, a.customer_id, a.product_id, a.account_type, a.balance_control, a.balance,
           a.credit_limit, a.status, a.activation_date, a.expiration_date,
           a.avail_after_first_use_days, a.avail_after_last_use_days,
           least(a.first_usage, a.first_recharge), greatest(a.last_usage, a.last_recharge),
           a.password_hash, a.internal,
           EXISTS (SELECT 1 FROM product_services s WHERE s.product_id = a.product_id
                      AND s.service = 'voice'),
           c.balance_control, c.balance, c.credit_limit, c.currency::text, p.currency::text,
           held.amount, held.sessions,
           (SELECT coalesce(json_agg(json_build_array(e.access_code, e.tariff_id,
                                                      e.overdraft_protection)), '[]')
              FROM rating_entries e
             WHERE e.product_id = a.product_id AND e.service = 'voice' AND e.node = p_node
               AND e.access_code = ANY(p_codes))
      FROM accounts a JOIN customers c ON c.id = a.customer_id
      JOIN products p ON p.id = a.product_id
     CROSS JOIN LATERAL (
           SELECT coalesce(sum(r.amount), 0) AS amount, count(DISTINCT r.session_id) AS sessions
             FROM balance_reservations r JOIN server_nodes n ON n.instance_id = r.instance_id
            WHERE r.owner_key = k AND r.session_id <> p_session AND r.expires_at > now()
              AND n.stopped_at IS NULL
              AND n.last_seen > now() - make_interval(secs => p_expiry)) AS held
     WHERE a.id = p_account;
END $$;

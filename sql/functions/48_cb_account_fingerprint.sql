-- What authorization decides on, besides the balance, as one value (issue 17, item 1): legB's
-- re-authorization may reuse what legA's read (cb_reserve_again) only while this is unchanged.
--
-- cb_voice_entries: a product's voice rating entries in force at p_node (cb_node_entries) for
-- the access codes p_codes, as the JSON array [access_code, tariff_id, overdraft_protection]
-- cb_account_for_call returns, in access-code order so that equal entries give equal text.
-- PL/pgSQL so that its plan is kept per connection.
CREATE OR REPLACE FUNCTION cb_voice_entries(p_product integer, p_node text, p_codes text[])
RETURNS json
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(json_agg(json_build_array(e.access_code, e.tariff_id,
                                                      e.overdraft_protection)
                                     ORDER BY e.access_code), '[]')
              FROM cb_node_entries(p_node) e
             WHERE e.product_id = p_product AND e.service = 'voice'
               AND e.access_code = ANY(p_codes));
END $$;

-- cb_account_fingerprint: an MD5 of every field of the account, its customer, its product
-- and entries that authorization (cbserver/billing/authorize.py) decides on, except the ones
-- checked otherwise: the balance and credit limit (cb_reserve compares them under the row
-- lock), the last use or recharge (a later one only lengthens the availability after last
-- usage, it never refuses a call the older one allowed) and the password hash (legB's
-- re-authorization checks no password). An SQL expression: inlined into its callers.
CREATE OR REPLACE FUNCTION cb_account_fingerprint(a accounts, c customers, p products,
                                                  p_voice boolean, p_entries json)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT md5(row(a.id, a.customer_id, a.product_id, a.account_type, a.balance_control,
                   a.status, a.activation_date, a.expiration_date,
                   a.avail_after_first_use_days, a.avail_after_last_use_days,
                   least(a.first_usage, a.first_recharge), a.internal, c.balance_control,
                   c.currency, p.currency, p_voice, p_entries::text)::text)
$$;

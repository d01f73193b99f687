-- legB's re-authorization in one round trip (issue 17, item 1). The node decides legB's hold
-- on what legA's authorization read (the account, its rating entries and its balance) and
-- hands the decision here with that read's cb_account_fingerprint. The decision is stored by
-- cb_reserve, under the balance's row lock and by its rules (the balance, credit limit, other
-- sessions' holds and their number as expected, or a free budget of at least p_min_free),
-- only while the account, customer, product and entries still fingerprint the same:
-- anything else authorization decides on changed meanwhile and done is false, nothing
-- stored, and the node reads everything again (cb_account_for_call then cb_reserve, as
-- before). done is false too when cb_reserve refuses (the balance moved) or the account is
-- gone. Before, legB always made both round trips and both commits.
CREATE OR REPLACE FUNCTION cb_reserve_again(p_session text, p_account text, p_node text,
                                            p_codes text[], p_fingerprint text,
                                            p_customer bigint, p_subordinate boolean,
                                            p_key text, p_expiry integer,
                                            p_expect_balance numeric, p_expect_credit numeric,
                                            p_expect_reserved numeric, p_expect_open integer,
                                            p_min_free numeric, p_spend text, p_legs text[],
                                            p_amounts numeric[], p_currency text,
                                            p_instance uuid, p_lifetime integer)
RETURNS TABLE (done boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    f text;
BEGIN
    SELECT cb_account_fingerprint(a, c, p,
               EXISTS (SELECT 1 FROM product_services s WHERE s.product_id = a.product_id
                          AND s.service = 'voice'),
               cb_voice_entries(a.product_id, p_node, p_codes))
      INTO f
      FROM accounts a JOIN customers c ON c.id = a.customer_id
      JOIN products p ON p.id = a.product_id
     WHERE a.id = p_account;
    IF f IS NULL OR f <> p_fingerprint THEN
        RETURN QUERY SELECT false;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT r.done FROM cb_reserve(p_session, p_account, p_customer, p_subordinate, p_key,
                                  p_expiry, p_expect_balance, p_expect_credit,
                                  p_expect_reserved, p_expect_open, p_min_free, p_spend,
                                  p_legs, p_amounts, p_currency, p_instance, p_lifetime) r;
END $$;

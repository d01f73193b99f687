-- Test catalog for the rating/authorization/xDR tests: the manual's example in miniature.
INSERT INTO destinations (prefix) VALUES ('1'), ('1818'), ('44'), ('49'), ('33');

INSERT INTO tariffs (id, name, currency) VALUES (1, 'Callback', 'USD'), (2, 'CallbackFail', 'USD'),
    (3, 'Night', 'USD');
UPDATE tariffs SET offpeak_timezone = 'Europe/Berlin', offpeak_periods = '["mon-sun 00:00-07:59"]'
    WHERE id = 3;

INSERT INTO rates (tariff_id, prefix, first_interval, next_interval, first_price, next_price,
                   effective_from) VALUES
    (1, '1', 60, 6, 0.10, 0.05, '2020-01-01T00:00:00Z'),
    (1, '1818', 30, 6, 0.02, 0.02, '2020-01-01T00:00:00Z'),
    (1, '44', 1, 1, 0.60, 0.60, '2020-01-01T00:00:00Z'),
    (1, '49', 60, 60, 1.00, 1.00, '2099-01-01T00:00:00Z'),
    (2, '1', 60, 60, 0.50, 0.50, '2020-01-01T00:00:00Z'),
    (2, '44', 60, 60, 0.50, 0.50, '2020-01-01T00:00:00Z');
INSERT INTO rates (tariff_id, prefix, rating_mode, first_interval, next_interval, first_price,
                   next_price, offpeak_first_interval, offpeak_next_interval, offpeak_first_price,
                   offpeak_next_price, effective_from) VALUES
    (3, '44', 'peak_offpeak', 60, 60, 1.20, 1.20, 60, 60, 0.30, 0.30, '2020-01-01T00:00:00Z');

INSERT INTO products (id, name, currency) VALUES (1, 'Callback Services', 'USD'),
    (2, 'No Voice', 'USD'), (3, 'Any Code', 'USD'), (4, 'Protected', 'USD');
INSERT INTO product_services (product_id, service) VALUES (1, 'voice'), (3, 'voice'), (4, 'voice');
INSERT INTO rating_entries (product_id, node, access_code, tariff_id, overdraft_protection) VALUES
    (1, 'node1', 'WEBCALLBACK', 1, false),
    (1, 'node1', 'CALLBACK_FAIL', 2, false),
    (2, 'node1', 'WEBCALLBACK', 1, false),
    (3, 'node1', '', 3, false),
    (4, 'node1', 'WEBCALLBACK', 1, true);

INSERT INTO customers (id, name, balance_control, currency, credit_limit, balance) VALUES
    (1, 'Retail', 'prepaid', 'USD', NULL, 0),
    (2, 'Corp', 'postpaid', 'USD', 100, 97);

INSERT INTO accounts (id, customer_id, product_id, account_type, balance_control, balance,
                      credit_limit, status, expiration_date, password_hash) VALUES
    ('cb1001', 1, 1, 'debit', 'individual', 10.00, NULL, 'active', NULL, NULL),
    ('cb1002', 1, 1, 'credit', 'individual', 1.00, 5.00, 'active', NULL, NULL),
    ('cb1003', 2, 1, 'debit', 'subordinate', 0, NULL, 'active', NULL, NULL),
    ('cb1004', 1, 1, 'debit', 'individual', 10.00, NULL, 'inactive', NULL, NULL),
    ('cb1005', 1, 1, 'debit', 'individual', 10.00, NULL, 'active', '2021-01-01T00:00:00Z', NULL),
    ('cb1006', 1, 2, 'debit', 'individual', 10.00, NULL, 'active', NULL, NULL),
    ('cb1007', 1, 1, 'debit', 'individual', 10.00, NULL, 'active', NULL, 'scrypt$64$8$1$oZwiPngz8yAgIAdcx2tc6A$0slid+35S4/zs70eSlrnCdP6CBYhMhOsULBY9Le0k5c'),
    ('cb1008', 1, 3, 'debit', 'individual', 10.00, NULL, 'active', NULL, NULL),
    ('cb1009', 1, 4, 'debit', 'individual', 10.00, NULL, 'active', NULL, NULL),
    ('cb1010', 1, 1, 'debit', 'individual', 0.50, NULL, 'active', NULL, NULL);
UPDATE accounts SET first_usage = '2020-01-01T00:00:00Z', avail_after_first_use_days = 30
    WHERE id = 'cb1004';
INSERT INTO accounts (id, customer_id, product_id, account_type, balance, first_usage,
                      avail_after_first_use_days) VALUES
    ('cb1011', 1, 1, 'debit', 10.00, '2020-01-01T00:00:00Z', 30);

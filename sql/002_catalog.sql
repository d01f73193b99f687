-- 002: the billing catalog (the manual's "Create a tariff" to "Create an internal account"):
-- the destination register, tariffs and their rates, products with their rating lists,
-- customers, batches and accounts. The service layer (cbserver/billing/catalog.py,
-- accounts.py, generator.py) checks every rule first and names the field; the constraints
-- below are the last line of defence, so that nothing invalid is ever stored.
--
-- Conventions:
--   * money is numeric, never float; times are timestamptz;
--   * currency is an ISO 4217 code (three capital letters; the list of known codes is in
--     cbserver/billing/currencies.py);
--   * service 'voice' is the manual's "Voice calls";
--   * accounts.balance: for a debit account the money left; for a credit account the amount
--     owed (what it may still spend is credit_limit - balance).

-- The destination register: a rate can only be entered for a prefix listed here.
-- The prefix '|' is the manual's wildcard destination (matches every number, lowest priority).
CREATE TABLE destinations (
    prefix      text PRIMARY KEY
                CHECK (prefix = '|' OR prefix ~ '^[0-9]{1,20}$'),
    country     text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tariffs (
    id                serial PRIMARY KEY,
    name              text NOT NULL UNIQUE CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    -- chosen once, never changed afterwards (see the trigger below)
    currency          char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    service           text NOT NULL DEFAULT 'voice' CHECK (service IN ('voice')),
    applied_to        text NOT NULL DEFAULT 'customer' CHECK (applied_to IN ('customer', 'vendor')),
    managed_by        text NOT NULL DEFAULT 'administrator' CHECK (managed_by IN ('administrator')),
    -- optional off-peak period: an IANA zone and a JSON array of windows such as
    -- "mon-fri 18:00-23:59" (days and times inclusive, local wall-clock time of the zone)
    offpeak_timezone  text NULL,
    offpeak_periods   jsonb NULL CHECK (offpeak_periods IS NULL
                                        OR jsonb_typeof(offpeak_periods) = 'array'),
    -- price a call crossing a peak/off-peak boundary part by part instead of as a whole
    split_at_boundary boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((offpeak_timezone IS NULL) = (offpeak_periods IS NULL))
);

CREATE FUNCTION tariffs_currency_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.currency IS DISTINCT FROM OLD.currency THEN
        RAISE EXCEPTION 'the currency of tariff % cannot be changed', OLD.name
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tariffs_currency_immutable BEFORE UPDATE OF currency ON tariffs
    FOR EACH ROW EXECUTE FUNCTION tariffs_currency_immutable();

-- A rate of a tariff for one destination prefix; several versions (effective_from) may exist,
-- future ones included. Prices are per minute, intervals in whole seconds.
CREATE TABLE rates (
    id                     serial PRIMARY KEY,
    tariff_id              integer NOT NULL REFERENCES tariffs (id) ON DELETE CASCADE,
    prefix                 text NOT NULL REFERENCES destinations (prefix) ON DELETE RESTRICT,
    rating_mode            text NOT NULL DEFAULT 'flat' CHECK (rating_mode IN ('flat', 'peak_offpeak')),
    first_interval         integer NOT NULL CHECK (first_interval BETWEEN 1 AND 86400),
    next_interval          integer NOT NULL CHECK (next_interval BETWEEN 1 AND 86400),
    first_price            numeric NOT NULL CHECK (first_price >= 0),
    next_price             numeric NOT NULL CHECK (next_price >= 0),
    offpeak_first_interval integer NULL CHECK (offpeak_first_interval BETWEEN 1 AND 86400),
    offpeak_next_interval  integer NULL CHECK (offpeak_next_interval BETWEEN 1 AND 86400),
    offpeak_first_price    numeric NULL CHECK (offpeak_first_price >= 0),
    offpeak_next_price     numeric NULL CHECK (offpeak_next_price >= 0),
    formula                text NULL CHECK (formula IS NULL OR length(formula) BETWEEN 1 AND 500),
    effective_from         timestamptz NOT NULL DEFAULT now(),
    created_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tariff_id, prefix, effective_from),
    -- the four off-peak fields are all present in peak/off-peak mode and all absent in flat mode
    CHECK (
        (rating_mode = 'peak_offpeak'
         AND offpeak_first_interval IS NOT NULL AND offpeak_next_interval IS NOT NULL
         AND offpeak_first_price IS NOT NULL AND offpeak_next_price IS NOT NULL)
        OR
        (rating_mode = 'flat'
         AND offpeak_first_interval IS NULL AND offpeak_next_interval IS NULL
         AND offpeak_first_price IS NULL AND offpeak_next_price IS NULL)
    )
);

CREATE INDEX rates_prefix ON rates (prefix);

CREATE TABLE products (
    id              serial PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    end_user_name   text NOT NULL DEFAULT '',
    product_type    text NOT NULL DEFAULT 'main' CHECK (product_type IN ('main')),
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    managed_by      text NOT NULL DEFAULT 'administrator' CHECK (managed_by IN ('administrator')),
    default_acl     text NOT NULL DEFAULT '',
    account_role    text NOT NULL DEFAULT 'universal' CHECK (account_role IN ('universal')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Included services of a product ("Voice calls").
CREATE TABLE product_services (
    product_id integer NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    service    text NOT NULL CHECK (service IN ('voice')),
    PRIMARY KEY (product_id, service)
);

-- Usage charges: the product's rating list. An entry selects the tariff for a service at a node
-- and access code ('' = any access code, used when no entry names the caller's code).
CREATE TABLE rating_entries (
    id                   serial PRIMARY KEY,
    product_id           integer NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    service              text NOT NULL DEFAULT 'voice' CHECK (service IN ('voice')),
    node                 text NOT NULL CHECK (length(btrim(node)) BETWEEN 1 AND 100),
    access_code          text NOT NULL DEFAULT '' CHECK (access_code ~ '^[A-Za-z0-9_.-]{0,64}$'),
    tariff_id            integer NOT NULL REFERENCES tariffs (id) ON DELETE RESTRICT,
    overdraft_protection boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (product_id, service, node, access_code)
);

CREATE INDEX rating_entries_tariff ON rating_entries (tariff_id);

-- A rating entry's tariff is priced in the product's currency.
CREATE FUNCTION rating_entries_same_currency() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT currency FROM tariffs WHERE id = NEW.tariff_id)
       IS DISTINCT FROM (SELECT currency FROM products WHERE id = NEW.product_id) THEN
        RAISE EXCEPTION 'the tariff of a rating entry must be in the product''s currency'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER rating_entries_same_currency BEFORE INSERT OR UPDATE ON rating_entries
    FOR EACH ROW EXECUTE FUNCTION rating_entries_same_currency();

CREATE TABLE customers (
    id                      serial PRIMARY KEY,
    name                    text NOT NULL UNIQUE CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    balance_control         text NOT NULL DEFAULT 'postpaid'
                            CHECK (balance_control IN ('prepaid', 'postpaid')),
    currency                char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    credit_limit            numeric NULL CHECK (credit_limit >= 0),
    -- the amount the customer owes (subordinate accounts spend against credit_limit - balance)
    balance                 numeric NOT NULL DEFAULT 0,
    business_model          text NOT NULL DEFAULT 'universal' CHECK (business_model IN ('universal')),
    customer_class          text NOT NULL DEFAULT '',
    billing_period          text NOT NULL DEFAULT 'monthly'
                            CHECK (billing_period IN ('daily', 'weekly', 'semimonthly', 'monthly')),
    billing_period_timezone text NOT NULL DEFAULT 'UTC',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Accounts are grouped into batches (the generator makes one per run, or adds to one).
CREATE TABLE batches (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    customer_id integer NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One generator run: its parameters (never a password) and where its CSV was written.
CREATE TABLE generator_runs (
    id          serial PRIMARY KEY,
    batch_id    integer NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    quantity    integer NOT NULL CHECK (quantity > 0),
    parameters  jsonb NOT NULL,
    csv_path    text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    -- the account ID (PIN); generated ones are a prefix (letters allowed) and digits
    id                         text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    customer_id                integer NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    product_id                 integer NOT NULL REFERENCES products (id) ON DELETE RESTRICT,
    batch_id                   integer NULL REFERENCES batches (id) ON DELETE RESTRICT,
    role                       text NOT NULL DEFAULT 'universal' CHECK (role IN ('universal')),
    account_type               text NOT NULL DEFAULT 'debit' CHECK (account_type IN ('debit', 'credit')),
    balance_control            text NOT NULL DEFAULT 'individual'
                               CHECK (balance_control IN ('individual', 'subordinate')),
    -- debit: the money left; credit: the amount owed
    balance                    numeric NOT NULL DEFAULT 0,
    opening_balance            numeric NOT NULL DEFAULT 0 CHECK (opening_balance >= 0),
    credit_limit               numeric NULL CHECK (credit_limit >= 0),
    status                     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    activation_date            timestamptz NULL,
    expiration_date            timestamptz NULL,
    avail_after_first_use_days integer NULL CHECK (avail_after_first_use_days > 0),
    avail_after_last_use_days  integer NULL CHECK (avail_after_last_use_days > 0),
    first_usage                timestamptz NULL,
    last_usage                 timestamptz NULL,
    -- "scrypt$n$r$p$<salt b64>$<hash b64>" (cbserver/billing/passwords.py); NULL = no password
    password_hash              text NULL CHECK (password_hash IS NULL OR password_hash LIKE 'scrypt$%'),
    web_login                  text NULL UNIQUE,
    web_password_hash          text NULL CHECK (web_password_hash IS NULL
                                                OR web_password_hash LIKE 'scrypt$%'),
    time_zone                  text NOT NULL DEFAULT 'UTC',
    language                   text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2}(-[A-Za-z]{2})?$'),
    distributor                text NULL,
    ecommerce                  boolean NOT NULL DEFAULT false,
    -- the manual's internal account: charged for partially made hosted calls
    internal                   boolean NOT NULL DEFAULT false,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CHECK (account_type = 'credit' OR credit_limit IS NULL),
    CHECK (expiration_date IS NULL OR activation_date IS NULL OR expiration_date > activation_date),
    CHECK (NOT internal OR password_hash IS NOT NULL)
);

CREATE INDEX accounts_customer ON accounts (customer_id);
CREATE INDEX accounts_product ON accounts (product_id);
CREATE INDEX accounts_batch ON accounts (batch_id);
CREATE INDEX accounts_id_pattern ON accounts (id text_pattern_ops);

COMMENT ON COLUMN accounts.balance IS
    'debit account: money left; credit account: amount owed (may spend credit_limit - balance)';

-- 043: voice applications (the manual's WEB callback trigger instances) as catalog objects.
-- (040-042 are left to other changes made at the same time.)
-- One row per instance with every field of the manual's "Configure the instance parameters"
-- (the same fields, names and rules as an [[application]] table of the config, see
-- cbserver/billing/applications.py, which validates them before they are written here).
-- Every node reads this table, and re-reads it when the catalog change counter moves: the
-- trigger below bumps it (sql/012_catalog_changes.sql), so a change applies to the next
-- callback on every node without a restart.

CREATE TABLE applications (
    id                           serial      PRIMARY KEY,
    name                         text        NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    callback_page_address        text        NOT NULL,
    path                         text        NOT NULL DEFAULT '',
    hosts                        text[]      NOT NULL DEFAULT '{}',
    second_number                text        NOT NULL DEFAULT '',
    access_code                  text        NOT NULL DEFAULT 'WEBCALLBACK',
    internal_account             text        NOT NULL DEFAULT '',
    special_charge_if_legb_fails boolean     NOT NULL DEFAULT false,
    account_id_translation_rule  text        NOT NULL DEFAULT '',
    prompts                      text        NOT NULL DEFAULT '',
    language                     text        NOT NULL DEFAULT 'en',
    use_account_id_as_ani        boolean     NOT NULL DEFAULT false,
    hosted_allowed_clients       text[]      NOT NULL DEFAULT '{}',
    allowed_destinations         text[]      NOT NULL DEFAULT '{}',
    denied_destinations          text[]      NOT NULL DEFAULT '{}',
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER applications_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON applications
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_changes_bump();

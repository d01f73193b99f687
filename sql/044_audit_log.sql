-- 044: the audit log: one row per change made to the catalog, append-only.
-- (040-043 are left to other changes made at the same time.)
-- Every change made through the admin API, the CLI, a provisioning file or the admin UI is
-- written here by the billing services (cbserver/billing/audit.py) in the SAME transaction as
-- the change itself, so a change and its audit row are committed together or not at all.
-- who: the actor's identity (the bearer token's name "api-token", an OS user, an operator);
-- source: where the change came from: api, cli, ui, or provision:<file>; client: the client
-- address for the API and the UI. kind and key name the object (tariff/3, account/1000001);
-- action says what was done; before and after are the object as JSON (NULL when it did not
-- exist before, or no longer exists after). Secrets (password hashes) are never written.
--
-- Append-only: the triggers below refuse UPDATE, DELETE and TRUNCATE for everyone, the
-- table's owner included. Removing old rows is a deliberate act by a superuser who first
-- drops or disables the trigger (ALTER TABLE audit_log DISABLE TRIGGER ...), which itself
-- leaves a trace in PostgreSQL's log when log_statement = 'ddl'.

CREATE TABLE audit_log (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    who     text        NOT NULL CHECK (who <> ''),
    source  text        NOT NULL CHECK (source IN ('api', 'cli', 'ui', 'internal')
                                        OR source LIKE 'provision:%'),
    client  text        NOT NULL DEFAULT '',
    kind    text        NOT NULL,
    key     text        NOT NULL,
    action  text        NOT NULL,
    before  jsonb,
    after   jsonb
);

CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_object ON audit_log (kind, key, at);
CREATE INDEX audit_log_who ON audit_log (who, at);

CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();

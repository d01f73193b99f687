-- 012: a change counter over the tariffs and their rates, so that every node's in-memory
-- tariff cache notices a change within its check interval with one cheap query.

CREATE TABLE catalog_changes (
    id         integer     PRIMARY KEY CHECK (id = 1),
    counter    bigint      NOT NULL DEFAULT 0,
    changed_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO catalog_changes (id) VALUES (1);

CREATE FUNCTION catalog_changes_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_changes SET counter = counter + 1, changed_at = now() WHERE id = 1;
    RETURN NULL;
END $$;

CREATE TRIGGER tariffs_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tariffs
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_changes_bump();

CREATE TRIGGER rates_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rates
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_changes_bump();

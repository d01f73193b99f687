-- 046: per-tariff change versions, so that a change to one tariff (or its rates) makes every
-- node reload that tariff only, instead of forgetting all of them (012 bumped one counter for
-- any write to tariffs or rates).
--
-- Each statement that writes rates or tariffs still bumps catalog_changes.counter once (the
-- nodes' cheap probe), and stamps every tariff it touched with the new counter value in
-- tariff_versions. A node that last read counter c asks for the tariffs whose version > c:
-- exactly those changed since, because the counter row's lock orders the writers, so every
-- value <= c was committed when c was read. Destinations are not part of a loaded tariff (a
-- rate refers to its prefix; a registered prefix cannot be deleted while a rate uses it, and
-- country/description are not used in rating), so a change to them reloads nothing.

CREATE TABLE tariff_versions (
    tariff_id integer PRIMARY KEY,
    version   bigint  NOT NULL
);

CREATE INDEX tariff_versions_version ON tariff_versions (version);

-- One trigger function for both tables; the transition tables it reads are those its trigger
-- declares (PL/pgSQL plans each query on first use, so the others are never touched).
CREATE FUNCTION catalog_stamp_tariffs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids   integer[];
    stamp bigint;
BEGIN
    IF TG_TABLE_NAME = 'rates' THEN
        IF TG_OP = 'INSERT' THEN
            ids := ARRAY(SELECT DISTINCT tariff_id FROM new_rows);
        ELSIF TG_OP = 'UPDATE' THEN
            ids := ARRAY(SELECT tariff_id FROM new_rows UNION SELECT tariff_id FROM old_rows);
        ELSIF TG_OP = 'DELETE' THEN
            ids := ARRAY(SELECT DISTINCT tariff_id FROM old_rows);
        ELSE  -- TRUNCATE: every tariff lost its rates
            ids := ARRAY(SELECT id FROM tariffs);
        END IF;
    ELSE
        IF TG_OP = 'INSERT' THEN
            ids := ARRAY(SELECT id FROM new_rows);
        ELSIF TG_OP = 'UPDATE' THEN
            ids := ARRAY(SELECT id FROM new_rows UNION SELECT id FROM old_rows);
        ELSIF TG_OP = 'DELETE' THEN
            ids := ARRAY(SELECT id FROM old_rows);
        ELSE
            ids := ARRAY(SELECT tariff_id FROM tariff_versions);
        END IF;
    END IF;
    IF cardinality(ids) = 0 THEN
        RETURN NULL;  -- the statement touched no row: nothing for the nodes to reload
    END IF;
    UPDATE catalog_changes SET counter = counter + 1, changed_at = now() WHERE id = 1
        RETURNING counter INTO stamp;
    INSERT INTO tariff_versions (tariff_id, version)
        SELECT DISTINCT t, stamp FROM unnest(ids) AS t
        ON CONFLICT (tariff_id) DO UPDATE SET version = EXCLUDED.version;
    RETURN NULL;
END $$;

DROP TRIGGER rates_changed ON rates;
DROP TRIGGER tariffs_changed ON tariffs;

CREATE TRIGGER rates_stamp_insert AFTER INSERT ON rates REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_stamp_tariffs();
CREATE TRIGGER rates_stamp_update AFTER UPDATE ON rates
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_stamp_tariffs();
CREATE TRIGGER rates_stamp_delete AFTER DELETE ON rates REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_stamp_tariffs();
CREATE TRIGGER rates_stamp_truncate AFTER TRUNCATE ON rates
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_stamp_tariffs();

CREATE TRIGGER tariffs_stamp_insert AFTER INSERT ON tariffs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_stamp_tariffs();
CREATE TRIGGER tariffs_stamp_update AFTER UPDATE ON tariffs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_stamp_tariffs();
CREATE TRIGGER tariffs_stamp_delete AFTER DELETE ON tariffs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_stamp_tariffs();
CREATE TRIGGER tariffs_stamp_truncate AFTER TRUNCATE ON tariffs
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_stamp_tariffs();

-- Every existing tariff starts at the current counter (nothing to reload because of this).
INSERT INTO tariff_versions (tariff_id, version)
    SELECT id, (SELECT counter FROM catalog_changes WHERE id = 1) FROM tariffs;

-- catalog_changes_bump() (012) stays: other tables' triggers may still bump the counter with it
-- (then no tariff is stamped, and no node reloads a tariff).

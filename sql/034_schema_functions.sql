-- 034: functions are defined once, in repeatable files.
-- The SQL functions (cb_node_alive, cb_slot_live, cb_take_slot, cb_reserve, ...) live in
-- sql/functions/NN_name.sql as CREATE OR REPLACE FUNCTION, applied in NN order after the
-- numbered migrations, and again whenever a file's checksum changes; numbered migrations keep
-- tables and data only. This table records, per file, the checksum applied last, so that
-- `cbserver db upgrade` re-applies exactly the files that changed and the server refuses to
-- start on functions older than its files (cbserver/db/migrations.py).

CREATE TABLE schema_functions (
    name       text        PRIMARY KEY,  -- the file's name without NN_ and .sql
    checksum   text        NOT NULL,     -- SHA-256 of the file as applied (LF line ends)
    applied_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE schema_functions IS
    'Repeatable function files (sql/functions/) applied to this database, with their checksums';

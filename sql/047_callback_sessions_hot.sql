-- 047: status updates of callback_sessions become HOT updates (issue 17 item 1, session 8).
-- A callback's row is updated about four times while it runs (cbserver/db/callbacks_store.py
-- UPSERT: status and state each time). PostgreSQL updates a row in place on its page, without
-- a new entry in every index (a HOT update), only when no column any index uses (key,
-- expression or predicate) changes. The indexes of 030 and 042 used status (predicates) and
-- state (the cause code's expression), so every update of every callback wrote a new entry in
-- each index: measured, 4,209 updates of 900 callbacks and not one HOT.
-- The indexes now use two stored generated columns that change once, when the callback ends:
-- final (status ended or refused) and cause_code (the final row's cause code, as
-- state -> 'cause' ->> 'code'; NULL while live). Queries keep their meaning: "live" is
-- NOT final, the cause filter is cause_code = code AND final (cbserver/db/calls_store.py).
-- Adding the columns rewrites the table once (it holds every past callback): upgrade in a
-- quiet hour. fillfactor 90 leaves room on each page for the new versions of recent rows.

ALTER TABLE callback_sessions
    ADD COLUMN final boolean NOT NULL
        GENERATED ALWAYS AS (status IN ('ended', 'refused')) STORED,
    ADD COLUMN cause_code text
        GENERATED ALWAYS AS (CASE WHEN status IN ('ended', 'refused')
                                  THEN state -> 'cause' ->> 'code' END) STORED;
ALTER TABLE callback_sessions SET (fillfactor = 90);

DROP INDEX callback_sessions_open_by_account;
CREATE INDEX callback_sessions_open_by_account ON callback_sessions (account_id) WHERE NOT final;
DROP INDEX callback_sessions_cause;
CREATE INDEX callback_sessions_cause ON callback_sessions (cause_code) WHERE final;
DROP INDEX callback_sessions_live;
CREATE INDEX callback_sessions_live ON callback_sessions (created_at) WHERE NOT final;

COMMENT ON COLUMN callback_sessions.final IS
    'status is ended or refused (generated): the indexes use it, so status updates stay HOT';
COMMENT ON COLUMN callback_sessions.cause_code IS
    'state''s cause code once final (generated), for the cause filter''s index';

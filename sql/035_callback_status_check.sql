-- 035: callback_sessions.status takes only the statuses a callback goes through
-- (cbserver/callback/api.py STATUSES; "ended" and "refused" are final, as the partial index
-- of 030 and cb_slot_live read them). Added NOT VALID here, so that adding it only needs a
-- short lock and new rows are checked from now on; 036 checks the rows already there.

ALTER TABLE callback_sessions ADD CONSTRAINT callback_sessions_status CHECK (
    status IN ('calling_you', 'answered', 'calling_destination', 'connected', 'ended', 'refused')
) NOT VALID;

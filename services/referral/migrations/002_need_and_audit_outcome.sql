-- What a referral was asked for is kept whole, so that a second request under the same referral_id
-- can be compared with the first (a conflicting one is refused and reported, never dropped
-- silently); and the audit log records refusals and denials as well as what was allowed.

-- The receiver type the request asked for (`need`); NULL = none asked. Rows from before this
-- migration never recorded it: `need_recorded` is false for them and `need` is not compared.
ALTER TABLE referral ADD COLUMN need text;
ALTER TABLE referral ADD COLUMN need_recorded boolean NOT NULL DEFAULT false;
ALTER TABLE referral ALTER COLUMN need_recorded SET DEFAULT true;

-- allowed: answered with the data or the step taken (2xx); denied: the caller's role may not, or the
-- referral is not addressed to the caller's organisation or does not exist (403, 404); refused: the
-- step is not possible in the referral's state or lacks its reason/outcome (409, 422).
-- Rows from before this migration were all written for what was allowed.
ALTER TABLE audit_log ADD COLUMN outcome text NOT NULL DEFAULT 'allowed'
    CHECK (outcome IN ('allowed', 'denied', 'refused'));
ALTER TABLE audit_log ADD COLUMN http_status smallint;
-- basis on a denied row: 'none' (nothing entitled the caller to the referral)
CREATE INDEX audit_log_by_referral ON audit_log (referral_id, seq);

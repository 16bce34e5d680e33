-- What a partner key may say beyond its own organisation's live events (see tsunagu/auth.py):
-- acts_for: the organisations a platform reports for (the #9999 carrier reported for every desk);
-- backfill: it may send events older than intake's horizon (an authorised replay of a past period).
ALTER TABLE credentials
    ADD COLUMN acts_for text[] NOT NULL DEFAULT '{}',
    ADD COLUMN backfill boolean NOT NULL DEFAULT false;

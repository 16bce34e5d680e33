-- Who said what first (services/intake/ownership.py).
-- inbox.fields: a short digest of each attribute of an accepted event (never a value), so that the
-- same (source, id) sent again with other content is a conflict naming what differs, not a duplicate.
ALTER TABLE inbox ADD COLUMN fields jsonb;

-- A contact belongs to the organisation that first reported it; grants: organisations the owner's
-- platform named as answering it, which may then report its end, consultation and referral.
CREATE TABLE contacts (
    contact_id  text PRIMARY KEY,
    owner       text NOT NULL,
    grants      text[] NOT NULL DEFAULT '{}',
    claimed_at  timestamptz NOT NULL DEFAULT now()
);

-- A referral id belongs to the organisation that first requested it, with what it requested.
CREATE TABLE referrals (
    referral_id text PRIMARY KEY,
    owner       text NOT NULL,
    fields      jsonb NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);

-- The shared credentials store (see tsunagu/auth.py).

CREATE TABLE credentials (
    key_id      text PRIMARY KEY,
    org_id      text NOT NULL,
    role        text NOT NULL CHECK (role IN ('partner', 'secretariat', 'receiver')),
    key_hash    bytea NOT NULL UNIQUE,        -- SHA-256 of the key; the key itself is never stored
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX credentials_org ON credentials (org_id);

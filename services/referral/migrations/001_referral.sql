-- The directory of receivers (Open Referral HSDS-like: organisation, service, service area,
-- contact, schedule), the referrals with their history, the audit log of reads and the clock.

CREATE TABLE organization (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    receiver_type text NOT NULL,
    demo          boolean NOT NULL DEFAULT false
);

CREATE TABLE contact (
    organization_id text NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    kind            text NOT NULL,
    value           text NOT NULL,
    PRIMARY KEY (organization_id, kind, value)
);

CREATE TABLE service (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    name            text NOT NULL,
    receiver_type   text NOT NULL
);

CREATE TABLE service_area (
    service_id text NOT NULL REFERENCES service (id) ON DELETE CASCADE,
    area       text NOT NULL,   -- JIS X 0402 code; a prefecture's own row covers the prefecture
    PRIMARY KEY (service_id, area)
);
CREATE INDEX service_area_by_area ON service_area (area);

CREATE TABLE schedule (
    service_id text NOT NULL REFERENCES service (id) ON DELETE CASCADE,
    weekdays   text NOT NULL,
    opens      time NOT NULL,
    closes     time NOT NULL,
    PRIMARY KEY (service_id, weekdays, opens)
);

CREATE TABLE referral (
    referral_id     text PRIMARY KEY,
    contact_id      text NOT NULL,
    organisation_id text NOT NULL,
    municipality    text,
    urgency         text NOT NULL,
    status          text NOT NULL,
    chain_ids       text[] NOT NULL,     -- receivers to try, in order; the last is the secretariat
    chain_types     text[] NOT NULL,
    chain_areas     text[] NOT NULL,
    position        int NOT NULL,
    receiver_id     text,                -- chain_ids[position + 1], kept for the receivers' index
    deadline        timestamptz,         -- set while awaiting the receiver (requested, received)
    escalations     int NOT NULL,
    version         int NOT NULL,
    legal_basis     jsonb,
    reason          text,
    outcome         text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX referral_due ON referral (deadline) WHERE status IN ('requested', 'received');
CREATE INDEX referral_by_receiver ON referral (receiver_id, status);

CREATE TABLE history (
    referral_id text NOT NULL,
    version     int NOT NULL,
    id          text NOT NULL,           -- the event id
    type        text NOT NULL,
    at          timestamptz NOT NULL,    -- event time
    data        jsonb NOT NULL,
    PRIMARY KEY (referral_id, version)
);

-- Every read (and every action) of referral data: who, what, when, on what basis.
CREATE TABLE audit_log (
    seq         bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    key_id      text NOT NULL,
    org_id      text NOT NULL,
    role        text NOT NULL,
    action      text NOT NULL,           -- read, list, acknowledge, accept, ...
    referral_id text,
    basis       text NOT NULL            -- why the caller may see it: addressee or secretariat
);

-- The latest event time consumed: "now" when TSUNAGU_REFERRAL_CLOCK=event_time.
CREATE TABLE clock (
    id        int PRIMARY KEY CHECK (id = 1),
    watermark timestamptz NOT NULL
);

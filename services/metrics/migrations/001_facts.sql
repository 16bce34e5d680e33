-- metrics' facts: one row per contact, consultation and referral, combined from every event about
-- it by order-independent rules (services/metrics/domain.py). Figures are SQL over these rows.
-- Codes, ids, caller keys and tie-breaks use the "C" collation: grouping and counting distinct caller
-- keys sorts them (byte order is about twice as fast as a locale's), and tie-breaks must order exactly
-- as domain.py's Python strings do (by code point).
-- Each "slot" keeps its event time and a tie-break (source + id) so the same rule can be applied
-- again when a later batch brings another event of the same kind.

CREATE TABLE contacts (
    contact_id      text PRIMARY KEY,
    received_at     timestamptz,
    received_tb     text COLLATE "C",
    channel         text COLLATE "C",
    caller_key      text COLLATE "C",
    prefecture      text COLLATE "C",
    chosen_at       timestamptz,
    chosen_tb       text COLLATE "C",
    field           text COLLATE "C",
    answered_at     timestamptz,
    answered_tb     text COLLATE "C",
    wait_seconds    double precision,
    desk_id         text COLLATE "C",
    organisation_id text COLLATE "C",
    abandoned_at    timestamptz,
    abandoned_tb    text COLLATE "C",
    abandon_stage   text COLLATE "C",
    abandon_wait    double precision,
    ended_at        timestamptz,
    ended_tb        text COLLATE "C",
    talk_seconds    double precision,
    assigned_at     timestamptz,
    assigned_tb     text COLLATE "C",
    assigned_desk   text COLLATE "C",
    assigned_org    text COLLATE "C",
    assigned_field  text COLLATE "C",
    queued_at       timestamptz,
    overflow_tier   integer
);
CREATE INDEX contacts_received_at ON contacts (received_at);

CREATE TABLE consultations (
    contact_id      text PRIMARY KEY,
    recorded_at     timestamptz NOT NULL,
    recorded_tb     text COLLATE "C" NOT NULL,
    organisation_id text NOT NULL,
    desk_id         text,
    field           text,
    categories      text[] NOT NULL,
    age_band        text NOT NULL,
    risk            text NOT NULL,
    referral_needed boolean NOT NULL
);
CREATE INDEX consultations_recorded_at ON consultations (recorded_at);

CREATE TABLE referrals (
    referral_id     text PRIMARY KEY,
    contact_id      text COLLATE "C",
    requested_at    timestamptz,
    requested_tb    text COLLATE "C",
    organisation_id text,
    municipality    text,
    need            text,
    urgency         text,
    state_at        timestamptz,
    state_rank      integer,
    state_tb        text COLLATE "C",
    state           text,
    receiver_at     timestamptz,
    receiver_tb     text COLLATE "C",
    receiver_type   text,
    acknowledged_at timestamptz,
    escalated_at    timestamptz
);
CREATE INDEX referrals_requested_at ON referrals (requested_at);

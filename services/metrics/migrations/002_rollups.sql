-- Rollups: the facts (001) summed by event-time bucket, so a report over a year reads a few thousand
-- rows instead of millions of contacts. Kept exact by deltas in the same transaction as the inbox
-- claim: when a batch changes how a contact (or consultation) counts, its old contribution is
-- subtracted and its new one added (store.py), so duplicates, reordering and late events leave the
-- rollups equal to the rollups computed from the facts from scratch (tested).
--
-- grain: 'd' a day in Japan time, 'm' a month in Japan time; bucket: its start. A period is read as
-- whole months + whole days + the hours at its edges straight from the facts (domain.cover), so any
-- from–to stays exact.
-- cube: which group key k holds (0: none; contacts 1 field, 2 desk, 3 prefecture, 4 hour of day;
-- consultations 1 field, 2 desk, 3 age band, 4 risk, 5 hour of day, 6 category).
-- Rows whose counts fall back to zero are kept (a later event may bring them back).

CREATE TABLE contact_rollup (
    cube              smallint NOT NULL,
    grain             "char" NOT NULL,
    bucket            timestamptz NOT NULL,
    channel           text COLLATE "C",
    organisation      text COLLATE "C",
    k                 text COLLATE "C",
    attempts          bigint NOT NULL,
    connected         bigint NOT NULL,
    abandoned         bigint NOT NULL,
    abandoned_ivr     bigint NOT NULL,
    abandoned_queue   bigint NOT NULL,
    abandoned_ringing bigint NOT NULL,
    overflowed        bigint NOT NULL,
    wait_n            bigint NOT NULL,
    wait_sum          numeric NOT NULL,
    talk_n            bigint NOT NULL,
    talk_sum          numeric NOT NULL
);
CREATE UNIQUE INDEX contact_rollup_key ON contact_rollup (cube, grain, bucket, channel, organisation, k)
    NULLS NOT DISTINCT;

-- Fixed-bucket histograms (bin = how many of domain.HISTOGRAM_EDGES lie below the value) of the wait
-- of connected contacts ('w'), their talk time ('t') and the wait of queue abandonments ('a'); cubes
-- 0 and 1 only (store.HIST_CUBES: waits by desk, prefecture or hour are counted from the facts).
CREATE TABLE contact_hist (
    cube         smallint NOT NULL,
    grain        "char" NOT NULL,
    bucket       timestamptz NOT NULL,
    measure      "char" NOT NULL,
    channel      text COLLATE "C",
    organisation text COLLATE "C",
    k            text COLLATE "C",
    bin          smallint NOT NULL,
    n            bigint NOT NULL
);
CREATE UNIQUE INDEX contact_hist_key ON contact_hist (cube, grain, bucket, measure, channel, organisation, k, bin)
    NULLS NOT DISTINCT;

CREATE TABLE consultation_rollup (
    cube            smallint NOT NULL,
    grain           "char" NOT NULL,
    bucket          timestamptz NOT NULL,
    organisation    text COLLATE "C",
    k               text COLLATE "C",
    consultations   bigint NOT NULL,
    referral_needed bigint NOT NULL,
    high_risk       bigint NOT NULL
);
CREATE UNIQUE INDEX consultation_rollup_key ON consultation_rollup (cube, grain, bucket, organisation, k)
    NULLS NOT DISTINCT;

-- Distinct callers are not additive, so for the named periods (config/periods.yaml) metrics keeps
-- each period's set of caller keys per group (period_callers: how many attempts and connected
-- contacts a caller has in the group) and maintains the number of callers with at least one of each
-- (period_caller_counts) by the same deltas. dim: 0 total, then domain.DIMENSIONS in order;
-- channel / organisation '*' mean all channels / all organisations; kept: (channel, organisation),
-- (channel, '*') and ('*', '*') — a partner asking for all channels is counted from the facts.
CREATE TABLE named_periods (
    name     text PRIMARY KEY,
    start_at timestamptz NOT NULL,
    end_at   timestamptz NOT NULL
);
CREATE TABLE period_callers (
    period       text COLLATE "C" NOT NULL,
    dim          smallint NOT NULL,
    channel      text COLLATE "C",
    organisation text COLLATE "C",
    k            text COLLATE "C",
    caller_key   text COLLATE "C" NOT NULL,
    attempts     integer NOT NULL,
    connected    integer NOT NULL
);
CREATE UNIQUE INDEX period_callers_key ON period_callers (period, dim, channel, organisation, k, caller_key)
    NULLS NOT DISTINCT;
CREATE TABLE period_caller_counts (
    period            text COLLATE "C" NOT NULL,
    dim               smallint NOT NULL,
    channel           text COLLATE "C",
    organisation      text COLLATE "C",
    k                 text COLLATE "C",
    callers           bigint NOT NULL,
    callers_connected bigint NOT NULL
);
CREATE UNIQUE INDEX period_caller_counts_key ON period_caller_counts (period, dim, channel, organisation, k)
    NULLS NOT DISTINCT;

-- Every group_by from the rollups (issue 5: a year's figures by desk, prefecture or hour of day).
--
-- Distinct callers by desk, prefecture and hour of day, and waits by the same, were counted from the
-- facts: 13–36 s for a year at 10 M contacts. Three more caller chains (domain.CALLER_CHAINS 4–6: a
-- channel, organisation and desk; a channel and prefecture; a channel and hour of day) answer the
-- first, and contact_hist now keeps every contact cube (store._contact_hist_sql) for the second. The chain of
-- every channel goes: a caller key belongs to one channel, so each channel's callers add up to all of
-- them, and every chain (renumbered) answers over every channel too.
--
-- caller_links gains the values of the new chains and caller_rollup the groups; both are recreated
-- (store.py writes them by column position) and, with contact_hist, rebuilt from the facts when the
-- schema has any (store.migrate_schema).
DROP TABLE caller_links;
CREATE TABLE caller_links (
    contact_id   text PRIMARY KEY,
    caller_key   text COLLATE "C" NOT NULL,
    received_at  timestamptz NOT NULL,
    channel      text COLLATE "C",
    organisation text COLLATE "C",
    field        text COLLATE "C",
    desk         text COLLATE "C",
    prefecture   text COLLATE "C",
    hour         smallint NOT NULL,  -- of received_at, Japan time
    connected    boolean NOT NULL,
    prev_at      timestamptz[] NOT NULL,
    next_at      timestamptz[] NOT NULL
) WITH (fillfactor = 85);
CREATE INDEX caller_links_received_at ON caller_links (received_at);

DROP TABLE caller_rollup;
CREATE TABLE caller_rollup (
    chain        smallint NOT NULL,
    connected    boolean NOT NULL,
    grain        "char" NOT NULL,
    bucket       timestamptz NOT NULL,
    channel      text COLLATE "C",
    organisation text COLLATE "C",
    field        text COLLATE "C",
    desk         text COLLATE "C",
    prefecture   text COLLATE "C",
    hour         smallint,
    next_day     timestamptz,
    n            bigint NOT NULL
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX caller_rollup_key
    ON caller_rollup (chain, connected, grain, bucket, channel, organisation, field, desk, prefecture, hour, next_day)
    NULLS NOT DISTINCT;

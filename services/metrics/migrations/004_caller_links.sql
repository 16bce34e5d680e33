-- Distinct callers for any from–to (the per-caller rate, issue 5), exact and read from a rollup.
--
-- The callers of [from, to) are the attempts in it that are their caller's last there: whose next
-- attempt by the same caller in the same group is at or after `to`, or absent (domain.callers_in).
-- A *chain* is one caller's attempts in one group (domain.CALLER_CHAINS: all channels; a channel; a
-- channel and field; a channel and organisation; a channel, organisation and field), ordered by
-- (event time, contact id); a second chain of each keeps the connected attempts only. Per contact,
-- caller_links keeps the values that put it in its chains and, per chain (domain.CHAIN_LINKS order),
-- the event time of the previous and the next attempt; caller_rollup counts attempts by bucket and the
-- day of their next attempt. A batch moves the links of the contacts it changes and of their
-- neighbours in each chain, and the rollup by the difference, in its own transaction (store.py).
-- Reading [from, to): whole days and months from caller_rollup (next on or after the last whole day's
-- end), the hours at the edges from caller_links (next at or after `to`), minus the tail's attempts
-- whose previous lies in the whole days (their previous was counted as a last attempt but is not).

-- the same caller's attempts in event-time order, to find a position's neighbours
CREATE INDEX contacts_caller ON contacts (caller_key, received_at, contact_id) WHERE caller_key IS NOT NULL;

CREATE TABLE caller_links (
    contact_id   text PRIMARY KEY,
    caller_key   text COLLATE "C" NOT NULL,
    received_at  timestamptz NOT NULL,
    channel      text COLLATE "C",
    organisation text COLLATE "C",
    field        text COLLATE "C",
    connected    boolean NOT NULL,
    prev_at      timestamptz[] NOT NULL,
    next_at      timestamptz[] NOT NULL
) WITH (fillfactor = 85);
CREATE INDEX caller_links_received_at ON caller_links (received_at);

-- chain: domain.CALLER_CHAINS index; connected: the chain of connected attempts; channel,
-- organisation, field: the chain's group values (NULL where the chain has no such value);
-- next_day: the start (Japan time) of the day of the next attempt, NULL when there is none.
CREATE TABLE caller_rollup (
    chain        smallint NOT NULL,
    connected    boolean NOT NULL,
    grain        "char" NOT NULL,
    bucket       timestamptz NOT NULL,
    channel      text COLLATE "C",
    organisation text COLLATE "C",
    field        text COLLATE "C",
    next_day     timestamptz,
    n            bigint NOT NULL
) WITH (fillfactor = 70);
CREATE UNIQUE INDEX caller_rollup_key
    ON caller_rollup (chain, connected, grain, bucket, channel, organisation, field, next_day) NULLS NOT DISTINCT;

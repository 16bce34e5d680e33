-- Catch-up (rebuild) mode. While metrics replays a backlog into an empty or stale schema, batches
-- fold only the facts (inbox claim + facts upsert); the rollups, histograms and named periods' caller
-- sets are left stale. Once the consumer has caught up with the topics, one transaction derives them
-- all from the facts (store.rebuild_rollups) and sets mode to 'live': from then on every batch moves
-- them by deltas. A process killed mid-catch-up (or mid-derive: the transaction rolls back) starts
-- again in catch-up. While mode is 'catch_up' the API answers 503 instead of partial figures.
--
-- One row. Every catch-up batch reads it FOR SHARE in its transaction, and the derive takes it FOR
-- UPDATE before anything else, so no catch-up batch commits facts the derive did not see.
CREATE TABLE fold_mode (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    mode text NOT NULL CHECK (mode IN ('catch_up', 'live'))
);
-- a schema that already has facts had its rollups kept by deltas: it stays live; a new one catches up
INSERT INTO fold_mode (mode)
SELECT CASE WHEN EXISTS (SELECT FROM contacts) OR EXISTS (SELECT FROM consultations)
                 OR EXISTS (SELECT FROM referrals) THEN 'live' ELSE 'catch_up' END;

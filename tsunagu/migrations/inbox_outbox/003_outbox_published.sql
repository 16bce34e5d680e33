-- Retention (``outbox_retain_seconds``): a published record stays, marked, for a while, so that it can
-- be published again when the broker lost it (an in-memory broker restarted: see deploy/README.md,
-- "When the broker restarts"). Only the unpublished rows are the queue.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS published_at timestamptz;
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- A record for every partition of its topic (``Outgoing.every_partition``): a partner platform's
-- heartbeat marks time for all of them (routing's watermark).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS every_partition boolean NOT NULL DEFAULT false;

-- The W3C traceparent of the span that enqueued the record, sent as the record's header.
-- Idempotent: some outboxes gained the column before it was a numbered step.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text;

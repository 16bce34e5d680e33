-- intake's own schema: the de-duplication record, the outbox.

-- Every (source, id) intake ever accepted: a re-sent event is a duplicate, across restarts.
CREATE TABLE received (
    source      text NOT NULL,
    id          text NOT NULL,
    type        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, id)
);

-- Accepted events waiting to be published. Written in the same transaction as `received`,
-- so an event answered 2xx reaches the topic even if intake dies right after answering.
CREATE TABLE outbox (
    seq     bigserial PRIMARY KEY,
    topic   text NOT NULL,
    key     text NOT NULL,
    value   bytea NOT NULL
);

-- The inbox (tsunagu/inbox.py): which events the service has already consumed, so redelivery changes nothing.
CREATE TABLE inbox (
    source      text NOT NULL,
    id          text NOT NULL,
    type        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, id)
);

-- The outbox (tsunagu/outbox.py): the events the service derived, written in the transaction that makes them true.
CREATE TABLE outbox (
    seq     bigserial PRIMARY KEY,
    topic   text NOT NULL,   -- short topic name, e.g. contact.events
    key     text NOT NULL,
    value   bytea NOT NULL
);

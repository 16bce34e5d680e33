-- routing's state: one board (queues, line occupancy, clock) and the desk registry's versions.

-- The board is one row. Every batch of events is applied under this row's lock (SELECT ... FOR
-- UPDATE), so routing instances take turns: a line can never be given away twice.
CREATE TABLE board (
    id          int PRIMARY KEY CHECK (id = 1),
    version     bigint NOT NULL,          -- +1 per applied batch; instances reload when it moved
    clock       timestamptz,              -- event time the board has reached
    state       text NOT NULL,            -- services.routing.domain.Board.snapshot() as JSON
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO board (id, version, state) VALUES (1, 0, '{}');

-- Effective-dated desk registry versions, as applied by `tsunagu desks apply` (immutable).
CREATE TABLE desk_versions (
    seq             bigserial PRIMARY KEY,
    version         text NOT NULL UNIQUE,
    effective_from  timestamptz NOT NULL,
    document        jsonb NOT NULL,
    sha256          text NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);

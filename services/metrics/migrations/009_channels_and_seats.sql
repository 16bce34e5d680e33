-- Chat and SNS as channels (contract "contact.triaged …"): the seat a contact was last assigned, its
-- latest triage and its first transfer on the contact's row, and every seat decision as a row of its own.
--
-- The assigned slot (latest routing.assigned) gains its channel, seat and the seat's capacity; the triaged
-- slot keeps the latest contact.triaged; transferred_at the earliest contact.transferred (a transfer never
-- makes the contact a second attempt or connection: the earliest answer stays the one connection).
ALTER TABLE contacts
    ADD COLUMN assigned_channel  text COLLATE "C",
    ADD COLUMN assigned_seat     integer,
    ADD COLUMN assigned_capacity integer,
    ADD COLUMN triaged_at        timestamptz,
    ADD COLUMN triaged_tb        text COLLATE "C",
    ADD COLUMN risk              text COLLATE "C",
    ADD COLUMN transferred_at    timestamptz;

-- Seat occupancy needs each time a seat took a conversation, not only the latest: one row per
-- routing.assigned that names a seat, and per routing.withdrawn / contact.transferred (which release the
-- line or seat the contact held). A row is its event (tb: source + id), so duplicates are the same row
-- and the set does not depend on arrival order; a conversation's time at a seat is read from the set
-- (domain.occupancy, store.occupancy).
CREATE TABLE seat_events (
    tb           text COLLATE "C" PRIMARY KEY,
    contact_id   text COLLATE "C" NOT NULL,
    at           timestamptz NOT NULL,
    kind         text COLLATE "C" NOT NULL,  -- assigned | withdrawn | transferred
    desk         text COLLATE "C",
    organisation text COLLATE "C",
    seat         integer,
    capacity     integer,
    channel      text COLLATE "C"
);
CREATE INDEX seat_events_contact ON seat_events (contact_id, at, tb);
CREATE INDEX seat_events_assigned_at ON seat_events (at) WHERE kind = 'assigned';

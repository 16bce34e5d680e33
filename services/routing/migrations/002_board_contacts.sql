-- The board's contacts, one row each: a batch writes only the contacts it changed (and deletes the
-- ones that left), instead of the whole board. board.state keeps the rest (clock, next_seq,
-- idle_since): Board.snapshot_header(). A board is that header plus every row here.
CREATE TABLE board_contacts (
    contact_id  text PRIMARY KEY,
    state       text NOT NULL           -- services.routing.domain.Contact.as_dict() as JSON
);

-- Move the contacts of a board written whole by an earlier version into their rows.
INSERT INTO board_contacts (contact_id, state)
SELECT c ->> 'contact_id', c::text
FROM board, jsonb_array_elements(coalesce(state::jsonb -> 'contacts', '[]'::jsonb)) AS c;
UPDATE board SET state = (state::jsonb - 'contacts')::text WHERE state::jsonb ? 'contacts';

-- Caller links moved after the fold, many batches at once (issue 5: the live fold's rate).
--
-- Keeping the callers' links (004) in every live batch's own transaction cost three quarters of
-- PostgreSQL's time per event: a contact's links moved once for each of its events that changed them
-- (arrival, field, organisation, answer), each time with the lookups of its neighbours. A live batch
-- now lists the contacts it changed here, in its transaction; store.derive_links moves their links and
-- the caller rollup later (CHAINS_APPLY over everything listed: a contact changed by several batches
-- moves once), from a task of the service and before every read of the links — so a figure still
-- counts every committed event. Rows are only inserted (a contact may be listed more than once) and
-- deleted by a derive: a batch and a derive never wait for each other.
CREATE TABLE caller_links_pending (
    seq        bigserial PRIMARY KEY,
    contact_id text NOT NULL  -- as contacts.contact_id (its collation: the primary key serves the lookups)
);

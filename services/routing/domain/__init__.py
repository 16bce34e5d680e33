"""routing's rules, pure: the board of desks, lines and queues, and every assignment decision.

``Board.apply(kind, at, data)`` takes one canonical contact event and returns the decisions it
causes (``routing.assigned`` / ``queued`` / ``overflowed`` / ``withdrawn``). No I/O, no clock:
the caller hands in the event's time.

**Time.** The board's clock is the greatest event time it has applied; it never goes back. An
event older than the clock is applied at the clock. Timers (a queued contact's overflow to tier-2
desks, a ringing assignment's withdrawal) fire in order, each at its own due time, but only once
every stream of events has passed it: routing reads ``contact.events`` partition by partition, so
one partition's later events can be read before another's earlier ones (an answer on one
partition behind a heartbeat on another must not be taken for a ring timeout). ``observe(stream,
at)`` records how far each stream (partition) has been read; the **watermark** is the least of
those marks, and a timer fires when the watermark passes its due time. A board fed by ``apply``
alone has one implicit stream, whose watermark is its clock.

Two ways to apply what is read (``routing_order`` in settings):
- *arrival* (live service): each event is applied as soon as it is read — an assignment never
  waits for other partitions — and only the timers wait for the watermark;
- *event time* (replays): each event is held (``hold``) until the watermark passes its time, then
  applied in event-time order across streams (``release``), each stream's own order kept. The
  decisions are then exactly those of the events applied in order, whatever order the partitions
  were read in, which is what a replay checking routing against its own model needs.

When no contact arrives, time advances by the ``platform.heartbeat`` events that partners'
telephony and chat platforms send every few seconds (5 s suggested), which intake publishes to
every partition so that every stream's mark moves; without any event routing's time stands still,
which is what an accelerated or paused replay needs.

**A jump in time.** Time may jump: a platform whose clock is wrong, or live heartbeats after a
replay of a past period. When the limit the timers may fire up to (the watermark, or the event's
time) is more than ``GAP`` (one hour) past the clock, the clock first moves to ``limit - GAP``, and
every timer due before that fires there, late, once: a ringing contact is withdrawn once and
re-routed at that moment, a waiting one overflows once, and the minute timer resumes after the
clock — nothing is re-rung every ring timeout across the gap. Within the last ``GAP`` every timer
fires at its own time, as always. So a board never left more than ``GAP`` without an event decides
exactly as one ticked at every timer (what a replay checking routing against this board as its
model relies on), and the work a jump costs is bounded by ``GAP``, not by the jump.

**Ahead of the wall clock.** The board has no wall clock; routing's handler (handlers.py) has one,
and keeps event times that run ahead of it off the board: an event whose time is more than
``routing_max_clock_lead_s`` (settings) ahead of routing's wall clock moves nothing by its own time.
A ``platform.heartbeat`` that far ahead is ignored: it moves no stream's mark and not the clock. A
contact event that far ahead is applied at the wall clock plus that lead, and its stream's mark
moves no further: its caller is real, and a contact event set aside could leave a caller unrouted
or a line booked forever (a lost ``contact.ended``). So one platform that runs ahead moves the
watermark and the clock at most that lead past the wall clock, however far ahead it runs. A replay
of a past period has every event time behind the wall clock: nothing of it is touched.

**Rules.**
- A contact that chose a field goes to an open tier-1 desk serving the field with a free line:
  preferring a desk whose regions include the caller's prefecture, then the desk idle longest
  (its last line released earliest; a line released before the registry version in force took
  effect counts as released at that moment, so a new version starts every desk level), then the
  desk id. Otherwise it queues.
- Queues are per field, ordered by priority (the version's ``priority_fields``, highest first)
  and then by arrival (FIFO). A desk serving several fields takes the best-ranked contact across
  them.
- Work conservation: after every event, no contact waits while a line that qualifies for it is
  free (an open desk serving its field, tier 1 — or tier 2 once it has overflowed).
- Overflow: after the field's ``overflow_after_s`` in the queue a contact becomes eligible for
  tier-2 desks too (``routing.overflowed``).
- Ring timeout: an assignment not answered within ``ring_timeout_s`` is withdrawn
  (``routing.withdrawn``), its line released, and the contact goes back to its place in the
  queue (it keeps its arrival rank) and is re-routed at once if a line qualifies — to another
  desk of the same tier when one has a free line, else to the same desk again.
- A line or a seat's place is released by ``contact.ended`` or ``contact.abandoned``; ``contact.answered`` turns a
  ringing assignment into a talk (no more ring timeout).
- Registry versions are effective-dated: at each moment the newest version in effect decides.
  Contacts on a desk that a new version shrinks or removes keep their line until they end; no
  new contact is given to a desk while it holds as many contacts as the version gives it lines.

**Channels.** A contact keeps the channel it arrived on (``contact.received``), until a transfer moves
it. A call takes a phone line (``lines``); on a ``blended`` desk, when no line is free, a seat holding
nothing, whole. A chat or SNS contact takes a seat (``seats``) of a desk whose ``seat_channels`` has its
channel: the least-loaded seat with room, the lowest number among equals, never more than the desk's
``conversations_per_seat`` on one seat, and never beside a call. Queues are per field and channel (a call
waits for a line, a chat for a seat), ordered across them by the same key, so a blended desk takes the
best-ranked contact of either. The text channels have their own clock (``rules.channels``): their
overflow wait and their offer timeout (no first response by then: ``routing.withdrawn``, reason
``offer_timeout``) are minutes where a call's are seconds.

**Triage.** ``contact.triaged`` gives a contact a risk level; a queue is ordered by triaged risk
(imminent, high, medium — and not triaged, an unknown risk being no reassuring one —, low, none), then
priority, then arrival. A late triage moves a waiting contact at once. A contact triaged imminent may
also take a desk configured ``imminent: true``, whatever its field, and such a desk is offered first.

**Transfer.** ``contact.transferred`` hands a ringing or talking contact on, but only from the desk that
holds it and only when the desk's organisation or the platform that reported the contact sends it
(``apply(..., sender=)``): its place there is released, it queues again with its first arrival rank (its
place), on its new channel and field, and is offered to the desk named — only that desk until its
overflow wait has passed, then its field's desks too — or to its field's desks. The assignment says
``reason: transferred``; an answer ends the search for the named desk.

**Modules.** ``board`` (the ``Board``: registry, queries, ``apply``, the contact events, persistence),
``state`` (what the board holds: registry lookups, free lines, queues, pending timers), ``streams``
(marks, watermark, held events), ``timers`` (firing them), ``lines`` (queues, lines, the
assignment), ``records`` (contacts, held events, decisions), ``clock`` (``GAP``, ``board_time``),
``invariants`` (what the property tests check).
"""

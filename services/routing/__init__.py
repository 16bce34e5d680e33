"""routing: an ACD over partner desks (issue 3).

Consumes ``contact.events`` (contact.received / field_selected / answered / abandoned / ended and
``platform.heartbeat``) in consumer group ``routing`` and publishes ``routing.assigned``,
``routing.queued``, ``routing.overflowed`` and ``routing.withdrawn`` on ``routing.decisions``
(source ``/tsunagu/routing``, keyed by contact, ids derived from the event that caused them).

- desks.py    the desk registry: effective-dated YAML versions (config/trial1.yaml, trial2.yaml)
- domain.py   the rules, pure: the board, queues, overflow, ring timeout, event time
- store.py    the board row and its lock — why two instances never book a line twice
- handlers.py the batch subscriber: inbox + board + outbox in one transaction
- http.py     GET /v1/desks, GET /v1/queues (secretariat: everything; partner: its own desks)
- cli.py      tsunagu desks apply FILE / tsunagu desks show [--at TIME]
"""

"""Connectors: partner-side agents that turn a platform's own records into tsunagu's events and send
them through intake's HTTP door with the partner's own key, like any partner system would.

Each connector (a module here) maps one platform: it derives every event id from the platform's own
ids (``ids.event_id``), so sending the same file or webhook again answers as duplicates, never a
double count; it refuses what it cannot map with the record and the reason (``Unmapped``) and sends
nothing of a record it could only half map; and it never writes a phone number anywhere but
``caller_id``, which intake pseudonymises and which goes no further.

Layer: connectors import the contract (``schemas``) and nothing else of tsunagu's; the ``tsunagu``
CLI (tools) mounts their commands.
"""

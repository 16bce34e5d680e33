"""Ids from the platform's own ids: the same platform record always gives the same event id, and no id
carries the platform's raw value (an Asterisk uniqueid or a call SID may hold a phone number or an
epoch that reads like one; intake refuses ids that look like phone numbers)."""

from __future__ import annotations

import hashlib

# Long enough that two platform records never share an id in practice (128 bits), short enough to read.
DIGEST_CHARS = 32


def digest(*parts: str) -> str:
    """A stable hex digest of ``parts`` (joined unambiguously)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part.encode("utf-8"))
    return h.hexdigest()[:DIGEST_CHARS]


def contact_id(platform: str, partner: str, native: str) -> str:
    """The contact id for the platform's own id of a call or conversation (e.g. an Asterisk uniqueid,
    a Twilio task SID, an Amazon Connect ContactId), unique across partners and platforms."""
    return f"{platform}-{digest(platform, partner, native)}"


def event_id(platform: str, partner: str, *native: str) -> str:
    """The event id for one platform record (e.g. uniqueid + queue_log event + its time; a webhook's own
    event SID): re-sending that record is a duplicate at intake."""
    return f"{platform}-ev-{digest(platform, partner, *native)}"

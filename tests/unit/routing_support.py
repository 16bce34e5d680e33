"""routing's board as tests drive it: desk registries written inline, a script of events that checks the
board's invariants after every step, and the decisions in short form (tests/unit and tests/integration)."""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas import ContactAbandoned, ContactAnswered, ContactEnded, ContactFieldSelected, ContactReceived
from schemas.timezone import JST
from services.routing.desks import parse_registry
from services.routing.domain.board import Board
from services.routing.domain.invariants import invariant_violations

T0 = datetime(2022, 7, 7, 10, 0, tzinfo=JST)


def registry(*desks: dict, version: str = "v1", effective_from: datetime = T0 - timedelta(days=1), **rules):
    orgs: dict[str, list[dict]] = {}
    for d in desks:
        d = dict(d)
        orgs.setdefault(d.pop("org", "npo-a"), []).append(d)
    return parse_registry({
        "version": version,
        "effective_from": effective_from.isoformat(),
        "rules": {"ring_timeout_s": 20, "overflow_after_s": {"default": 30}, **rules},
        "organisations": [{"id": o, "name": o, "desks": ds} for o, ds in orgs.items()],
    })


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Script:
    """Feeds events to a board and keeps every decision, checking the invariants after each step."""

    def __init__(self, *registries) -> None:
        self.board = Board(list(registries))
        self.decisions: list = []

    def _apply(self, kind: str, t: float, data) -> list:
        out = self.board.apply(kind, at(t), data)
        assert invariant_violations(self.board) == []
        self.decisions += out
        return out

    def call(self, cid: str, field: str, t: float = 0, prefecture: str | None = None) -> list:
        self._apply("contact.received", t, ContactReceived(contact_id=cid, channel="phone", prefecture=prefecture))
        return self._apply("contact.field_selected", t, ContactFieldSelected(contact_id=cid, field=field,
                                                                               menu_position=1))

    def answer(self, cid: str, desk: str, t: float) -> list:
        return self._apply("contact.answered", t, ContactAnswered(contact_id=cid, desk_id=desk, organisation_id="x",
                                                                  wait_seconds=0.0))

    def end(self, cid: str, t: float) -> list:
        return self._apply("contact.ended", t, ContactEnded(contact_id=cid, talk_seconds=1.0))

    def hang_up(self, cid: str, t: float) -> list:
        return self._apply("contact.abandoned", t, ContactAbandoned(contact_id=cid, stage="queue", wait_seconds=1.0))

    def tick(self, t: float) -> list:
        out = self.board.tick(at(t))
        assert invariant_violations(self.board) == []
        self.decisions += out
        return out


def kinds(decisions) -> list[tuple]:
    out = []
    for d in decisions:
        desk = getattr(d.data, "desk_id", None)
        out.append((d.kind.removeprefix("routing."), d.data.contact_id, desk) if desk else
                   (d.kind.removeprefix("routing."), d.data.contact_id))
    return out


LONELY = {"id": "lonely-1", "fields": ["loneliness"], "lines": 1}
HARDSHIP_A = {"id": "a", "fields": ["hardship"], "lines": 1}
HARDSHIP_B = {"id": "b", "fields": ["hardship"], "lines": 1}
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

# Three organisations' desks on two tiers (no opening hours: always open).
REG = registry(
    {"id": "a-lonely", "org": "npo-a", "fields": ["loneliness"], "lines": 1},
    {"id": "b-lonely", "org": "npo-b", "fields": ["loneliness", "hardship"], "lines": 1},
    {"id": "c-backup", "org": "npo-c", "fields": ["loneliness", "hardship"], "lines": 1, "tier": 2},
    overflow_after_s={"default": 30}, ring_timeout_s=20)

# Desks that open and close on whole minutes while calls wait (T0 is a Thursday, 10:00 JST): a desk
# opening must find its waiting contacts at that minute, whatever moments events are read at.
HOURS = registry(
    {"id": "a-lonely", "org": "npo-a", "fields": ["loneliness"], "lines": 1},
    {"id": "b-late", "org": "npo-b", "fields": ["loneliness", "hardship"], "lines": 1,
     "hours": [{"days": EVERY_DAY, "open": "10:03", "close": "10:07"}, {"days": EVERY_DAY, "open": "10:09",
                                                                       "close": "10:30"}]},
    {"id": "c-backup", "org": "npo-c", "fields": ["hardship"], "lines": 1, "tier": 2,
     "hours": [{"days": EVERY_DAY, "open": "10:05", "close": "11:00"}]},
    overflow_after_s={"default": 30}, ring_timeout_s=20)

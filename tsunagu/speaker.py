"""What a partner may say through intake (no I/O: intake's pure rules use it; tsunagu/auth.py builds it
from the partner's keys)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Speaker:
    """What a partner organisation may say through intake: its own organisation, the organisations its
    keys are registered to act for, and whether it may back-fill past periods."""

    org_id: str
    acts_for: frozenset[str] = frozenset()
    backfill: bool = False

    def may_speak_for(self, org_id: str) -> bool:
        return org_id == self.org_id or org_id in self.acts_for

"""Referral's own knobs (``TSUNAGU_REFERRAL_*``): its clock, its deadline scan, the acknowledgement
deadlines. The shared ones are tsunagu.settings.Settings'."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tsunagu.settings import Settings


class ReferralSettings(Settings):
    referral_clock: Literal["wall", "event_time"] = Field(
        "wall",
        description="what 'now' is for referral deadlines: the wall clock, or the latest event time consumed "
        "(replays, tests)",
    )
    referral_scan_seconds: float = Field(
        2.0, gt=0, le=300, description="how often referral looks for missed deadlines"
    )
    referral_imminent_ack_minutes: int = Field(
        15, ge=1, le=1440, description="imminent referrals must be acknowledged within these minutes"
    )
    referral_urgent_ack_hours: int = Field(
        4, ge=1, le=168, description="urgent referrals must be acknowledged within these hours"
    )
    referral_standard_ack_business_days: int = Field(
        1, ge=1, le=30, description="standard referrals must be acknowledged within these Japanese business days"
    )

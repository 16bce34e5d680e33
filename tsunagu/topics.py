"""The topics tsunagu owns, by short name. Full names carry ``Settings.topic_prefix``."""

from __future__ import annotations

INGRESS = "intake.ingress"  # partners with broker access publish here; intake validates
REJECTED = "intake.rejected"  # what intake refused, with the reason (no payload)
CONTACT_EVENTS = "contact.events"  # canonical contact events, keyed by contact_id
CONSULTATION_EVENTS = "consultation.events"  # canonical consultation / referral requests
ROUTING_DECISIONS = "routing.decisions"  # routing's assignments, queueing, overflow
REFERRAL_EVENTS = "referral.events"  # referral lifecycle, keyed by referral_id

ALL = (INGRESS, REJECTED, CONTACT_EVENTS, CONSULTATION_EVENTS, ROUTING_DECISIONS, REFERRAL_EVENTS)

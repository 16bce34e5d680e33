"""Who may say what about which contact and referral, pure: the rules intake applies inside the
transaction that stores a request's events (services/intake/store.py reads and writes the claims).

- A contact belongs to the organisation whose source first reported it (a ``contact.*`` event: a
  case system's consultation or referral request names a contact that must have been reported
  already — until then it is refused, to be sent again). Another organisation's
  ``contact.received`` for the same id is a **conflict** (ids of different organisations must not
  collide), and any other event about it from another organisation is rejected — unless the owner's
  platform named that organisation as answering it (``contact.answered``), or routing assigned the
  contact to one of that organisation's desks (``routing.assigned``, read from routing's decisions:
  services/intake/handlers.py): then it may report the contact's answer, end, transfer, consultation and
  referral. A triage (``contact.triaged``) comes from the owner's platform only. A transfer's desks
  are not checked here (intake knows no desks): routing acts only on a transfer whose ``from_desk_id``
  holds the contact.
- A referral id belongs to the organisation that first requested it. The same id from another
  organisation, or from the same one with other content, is a **conflict**; the same content again
  (a re-send under a new event id) is a duplicate.
- Which organisation an event names in ``data.organisation_id`` is checked before, against the key
  (services/intake/domain.py, ``sort_events``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas import Problem
from services.intake.domain import Canonical, Outcome, differing

# The events that report a contact happening (a telephony or chat platform's): the first claims it.
CLAIMING_TYPES = frozenset({"contact.received", "contact.field_selected", "contact.answered", "contact.abandoned",
                            "contact.ended"})
# What an organisation named in the owner's answer may report about the contact.
# A desk that holds the contact may hand it on (contact.transferred); only the owner's platform triages it.
GRANTED_TYPES = frozenset({"contact.answered", "contact.ended", "contact.transferred", "consultation.recorded",
                           "referral.requested"})

COLLIDING_CONTACT = ("another organisation already reported a contact with this id: use ids that cannot "
                     "collide with other organisations' (e.g. UUIDs)")
NOT_YET = ("no contact with this id has been reported yet: send the case system's events after the platform's "
           "(this one may be sent again)")
NOT_YOURS = ("this contact was reported by another organisation, and neither an answer of that organisation's "
             "platform nor routing's assignment names yours (if routing has just assigned it to your organisation, "
             "send this again in a moment)")
COLLIDING_REFERRAL = "another organisation already requested a referral with this id"


@dataclass
class ContactClaim:
    owner: str
    grants: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ReferralClaim:
    owner: str
    fields: Mapping[str, str]


@dataclass
class Judgement:
    allowed: list[Canonical] = field(default_factory=list)
    settled: dict[int, Outcome] = field(default_factory=dict)  # refused here, by request index
    new_contacts: dict[str, str] = field(default_factory=dict)  # contact -> owner
    new_grants: set[tuple[str, str]] = field(default_factory=set)  # (contact, organisation)
    new_referrals: dict[str, ReferralClaim] = field(default_factory=dict)


def _refuse(c: Canonical, status: str, path: str, message: str) -> Outcome:
    return Outcome(c.index, status, c.id, c.source, c.type, (Problem(path, message),))  # type: ignore[arg-type]


def judge(events: list[Canonical], contacts: Mapping[str, ContactClaim],
          referrals: Mapping[str, ReferralClaim]) -> Judgement:
    """Each event against the claims stored so far and those its request makes before it."""
    out = Judgement()
    known = {cid: ContactClaim(c.owner, set(c.grants)) for cid, c in contacts.items()}
    refs = dict(referrals)
    for c in events:
        claim = None
        if c.about_contact is not None:
            claim = known.get(c.about_contact)
            if claim is None and c.short not in CLAIMING_TYPES:
                out.settled[c.index] = _refuse(c, "rejected", "data.contact_id", NOT_YET)
                continue
            if claim is None:
                claim = known[c.about_contact] = ContactClaim(c.org)
                out.new_contacts[c.about_contact] = c.org
            elif claim.owner != c.org:
                if c.short == "contact.received":
                    out.settled[c.index] = _refuse(c, "conflict", "data.contact_id", COLLIDING_CONTACT)
                    continue
                if c.org not in claim.grants or c.short not in GRANTED_TYPES:
                    out.settled[c.index] = _refuse(c, "rejected", "data.contact_id", NOT_YOURS)
                    continue
        if c.short == "referral.requested" and c.referral_id is not None:
            asked = {k: v for k, v in c.fields.items() if k.startswith("data.")}
            earlier = refs.get(c.referral_id)
            if earlier is None:
                refs[c.referral_id] = out.new_referrals[c.referral_id] = ReferralClaim(c.org, asked)
            elif earlier.owner != c.org:
                out.settled[c.index] = _refuse(c, "conflict", "data.referral_id", COLLIDING_REFERRAL)
                continue
            elif changed := differing(earlier.fields, asked):
                out.settled[c.index] = _refuse(
                    c, "conflict", "data.referral_id",
                    "this referral was already requested with other content; differing: " + ", ".join(changed))
                continue
            elif c.referral_id not in out.new_referrals:
                # the same request again under a new event id: nothing new to publish
                out.settled[c.index] = Outcome(c.index, "duplicate", c.id, c.source, c.type)
                continue
        if (c.short == "contact.answered" and claim is not None and claim.owner == c.org
                and c.named_org is not None and c.named_org != c.org and c.named_org not in claim.grants):
            claim.grants.add(c.named_org)
            out.new_grants.add((c.about_contact, c.named_org))  # type: ignore[arg-type]
        out.allowed.append(c)
    return out

"""A second request under a referral_id is compared with what the stored referral holds: the names of
the differing fields, never their values; the same request again (another event time, the consent's
time in another offset) differs in nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from schemas.codes import LegalBasisKind, ReceiverType, Urgency
from schemas.events import Consent, LegalBasis
from services.referral.domain import (
    REQUEST_FIELDS,
    DeadlinePolicy,
    NewReferral,
    Receiver,
    differing_fields,
    open_referral,
)

T0 = datetime(2022, 7, 7, 1, 0, tzinfo=UTC)
CONSENT = LegalBasis(kind=LegalBasisKind.consent, consent=Consent(
    given=True, scope=[ReceiverType.municipality], recorded_by="staff-1", recorded_at=T0))
ASKED = NewReferral(referral_id="ref-1", contact_id="c-1", organisation_id="npo-a", municipality="131016",
                    need=None, urgency=Urgency.standard, basis=CONSENT, at=T0)
FOUND = [Receiver("muni-131016", ReceiverType.municipality, "131016")]
POLICY = DeadlinePolicy(imminent_minutes=15, urgent_hours=4, standard_business_days=1)


def stored(asked: NewReferral = ASKED):
    return open_referral(asked, FOUND, POLICY)[0]


def test_the_same_request_again_differs_in_nothing():
    jst = timezone(timedelta(hours=9))
    consent = CONSENT.consent.model_copy(update={"recorded_at": T0.astimezone(jst)})  # same instant, JST
    again = replace(ASKED, at=T0 + timedelta(minutes=3), basis=CONSENT.model_copy(update={"consent": consent}))
    assert differing_fields(stored(), again) == []


def test_another_case_under_the_same_id_names_every_differing_field_and_no_value():
    police = replace(ASKED, contact_id="c-other", organisation_id="npo-b", urgency=Urgency.imminent,
                     need=ReceiverType.police, basis=LegalBasis(kind=LegalBasisKind.vital_interest))
    fields = differing_fields(stored(), police)
    assert fields == ["contact_id", "organisation_id", "urgency", "need", "legal_basis"]
    assert set(fields) <= set(REQUEST_FIELDS)
    assert differing_fields(stored(), replace(ASKED, municipality="011002")) == ["municipality"]


def test_a_row_from_before_need_was_recorded_is_not_compared_on_need():
    asked = replace(ASKED, need=ReceiverType.self_reliance_centre)
    assert differing_fields(stored(), asked) == ["need"]
    assert differing_fields(stored(), asked, need_recorded=False) == []

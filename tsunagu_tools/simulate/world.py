"""The callers (and chat users) of a scenario, drawn once from its seed: when each calls or writes,
what they choose, how long they will wait, and what happens if they get through.

Every random draw of a contact comes from its own generator (seed, contact number), drawn before
the replay starts, so a contact's fate depends only on routing's decisions and never on the
order in which the replay happened to process things: the same seed and the same decisions give
the same events, in-process or through the real services.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache

from schemas.municipalities import all_municipalities
from schemas.timezone import JST
from tsunagu_tools.simulate.scenario import Chat, Scenario

MAX_RINGS = 8  # ring draws per contact; a contact offered more often than this reuses the last


@dataclass
class Consultation:
    categories: list[str]
    age_band: str
    risk: str
    referral_needed: bool
    consent: bool
    municipality: str


@dataclass
class ChatPlan:
    """What a chat user and the counsellors at the keyboard will do, drawn before the replay."""

    channel: str
    typing_s: float  # opening the talk to the first message
    silent: bool  # opens the talk and never writes
    triage: tuple[float, str] | None  # (first message to the screening result, risk), if reported
    responses: list[tuple[float, bool]]  # per offer: (first response delay at a seat of one, responded in time)
    conversation_s: float  # at a seat holding only this conversation
    transfer_after_s: float | None  # first response to the hand-over to the phone desk, if handed over


@dataclass
class Plan:
    """One call attempt, everything about it that does not depend on routing."""

    n: int
    contact_id: str
    caller_id: str  # raw, as the telephony platform sends it (intake pseudonymises it)
    region: str  # prefecture code
    arrive: float  # seconds from the scenario start
    ivr_abandon: bool
    ivr_s: float  # greeting + menu until the key (or the hang-up)
    field: str | None
    menu_key: int | None
    patience_s: float
    rings: list[tuple[float, bool]] = field(default_factory=list)  # (ring seconds, picked up)
    talk_s: float = 0.0
    wrapup_s: float = 0.0
    consultation: Consultation | None = None
    receiver_delays: tuple[float, float, float] = (0.0, 0.0, 0.0)
    outcome: str = "got_help"
    chat: ChatPlan | None = None  # a chat/SNS contact (None: a call)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    items = [(k, w) for k, w in weights.items() if k != "default" and w > 0]
    return rng.choices([k for k, _ in items], [w for _, w in items])[0]


@cache
def _municipalities_by_prefecture() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in all_municipalities():
        if not m.is_prefecture:
            out.setdefault(m.prefecture_code, []).append(m.code)
    return out


def arrival_offsets(scenario: Scenario) -> list[float]:
    """Exactly ``attempts`` arrival times (seconds from start), following the hourly profile."""
    return _offsets(scenario, scenario.demand.attempts, scenario.demand.hourly, "arrivals")


def _offsets(scenario: Scenario, attempts: int, hourly: tuple[float, ...], stream: str) -> list[float]:
    rng = random.Random(f"{scenario.seed}:{stream}")
    span = (scenario.end - scenario.start).total_seconds()
    start_local = scenario.start.astimezone(JST)
    # Piecewise-constant rate: one piece per hour of the span, weighted by its hour of day.
    edges = [0.0]
    cumulative = [0.0]
    t = 0.0
    first_hour_end = 3600.0 - (start_local.minute * 60 + start_local.second)
    while t < span:
        nxt = min(span, first_hour_end if t == 0.0 else t + 3600.0)
        hour = (start_local + timedelta(seconds=t)).hour
        cumulative.append(cumulative[-1] + hourly[hour] * (nxt - t))
        edges.append(nxt)
        t = nxt
    total = cumulative[-1]
    out = []
    for _ in range(attempts):
        u = rng.random() * total
        i = max(1, bisect.bisect_right(cumulative, u))
        lo, hi = cumulative[i - 1], cumulative[i]
        frac = 0.0 if hi == lo else (u - lo) / (hi - lo)
        out.append(edges[i - 1] + frac * (edges[i] - edges[i - 1]))
    out.sort()
    return out


def build_plans(scenario: Scenario, run: str, menu: dict[str, int]) -> list[Plan]:
    """Every contact of the scenario; ``run`` tags ids so that replays never share one."""
    d, p, c, r = scenario.demand, scenario.platform, scenario.counsellors, scenario.receivers
    callers_rng = random.Random(f"{scenario.seed}:callers")
    callers: list[str] = []
    plans: list[Plan] = []
    for n, arrive in enumerate(arrival_offsets(scenario)):
        rng = random.Random(f"{scenario.seed}:contact:{n}")
        if callers and callers_rng.random() < d.repeat_share:
            caller = callers_rng.choice(callers)
        else:
            caller = f"090-{callers_rng.randrange(10_000):04d}-{callers_rng.randrange(10_000):04d}"
            callers.append(caller)
        region = _pick(rng, d.prefectures)
        ivr_abandon = rng.random() < d.ivr_abandon
        field_code = None if ivr_abandon else _pick(rng, d.fields)
        key = menu.get(field_code) if field_code else None
        ivr_s = rng.uniform(*d.ivr_seconds) + (d.seconds_per_key * key if key is not None else 0.0)
        if ivr_abandon:
            ivr_s = rng.uniform(3.0, ivr_s)
        patience = rng.expovariate(1.0 / d.patience(field_code)) if field_code else 0.0
        if p.max_queue_s is not None:
            patience = min(patience, p.max_queue_s)
        rings = [(rng.uniform(*p.pickup_s), rng.random() >= p.no_pickup) for _ in range(MAX_RINGS)]
        mean = c.talk(field_code or "default")
        sigma = c.talk_sigma
        talk = rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)
        risk_weights = c.risk.get(field_code or "default", c.risk.get("default", {"none": 1.0}))
        risk = _pick(rng, risk_weights)
        k = rng.choice((1, 1, 2, 2, 3))
        cats: list[str] = []
        while len(cats) < k:
            cat = _pick(rng, c.categories)
            if cat not in cats:
                cats.append(cat)
        munis = _municipalities_by_prefecture().get(region) or ["131016"]
        consultation = Consultation(
            categories=cats, age_band=_pick(rng, c.age_bands), risk=risk,
            referral_needed=rng.random() < c.referral_by_risk.get(risk, 0.0),
            consent=rng.random() < c.consent, municipality=rng.choice(munis))
        plans.append(Plan(
            n=n, contact_id=f"{run}-{n:06d}", caller_id=caller, region=region, arrive=arrive,
            ivr_abandon=ivr_abandon, ivr_s=ivr_s, field=field_code, menu_key=key, patience_s=patience,
            rings=rings, talk_s=max(30.0, talk), wrapup_s=rng.uniform(*c.wrapup_s), consultation=consultation,
            receiver_delays=(rng.uniform(*r.acknowledge_s), rng.uniform(*r.accept_s), rng.uniform(*r.complete_s)),
            outcome=_pick(rng, r.outcomes)))
    return plans


def _draw_risk(rng: random.Random, weights: dict[str, float]) -> str:
    return _pick(rng, weights) if any(w > 0 for k, w in weights.items() if k != "default") else "none"


def _consultation(scenario: Scenario, rng: random.Random, field_code: str, region: str, risk: str) -> Consultation:
    """A chat's consultation record: the chat's own age bands and types where the scenario gives them."""
    c, chat = scenario.counsellors, scenario.chat
    assert chat is not None
    categories = chat.categories or c.categories
    k = rng.choice((1, 1, 2, 2, 3))
    cats: list[str] = []
    while len(cats) < min(k, sum(1 for w in categories.values() if w > 0)):
        cat = _pick(rng, categories)
        if cat not in cats:
            cats.append(cat)
    munis = _municipalities_by_prefecture().get(region) or ["131016"]
    return Consultation(categories=cats, age_band=_pick(rng, chat.age_bands or c.age_bands), risk=risk,
                        referral_needed=rng.random() < c.referral_by_risk.get(risk, 0.0),
                        consent=rng.random() < c.consent, municipality=rng.choice(munis))


def _chat_plan(chat: Chat, rng: random.Random, field_code: str) -> tuple[ChatPlan, str]:
    """The chat-side draws of one conversation, and the risk its counsellor will record."""
    t = chat.triage
    risk = _draw_risk(rng, chat.risk_weights(field_code))
    triaged = rng.random() < t.share
    late = rng.random() < t.late_share
    after = rng.uniform(*(t.late_after_s if late else t.after_s))
    responses = [(rng.uniform(*chat.first_response_s), rng.random() >= chat.no_response) for _ in range(MAX_RINGS)]
    mean, sigma = chat.conversation(field_code), chat.conversation_sigma
    conversation = max(60.0, rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma))
    hand_over = rng.random() < chat.transfer.share_by_risk.get(risk, 0.0)
    transfer_after = rng.uniform(*chat.transfer.after_s)
    plan = ChatPlan(channel=chat.channel, typing_s=rng.uniform(*chat.typing_s), silent=rng.random() < chat.silent_share,
                    triage=(after, risk) if triaged else None, responses=responses, conversation_s=conversation,
                    transfer_after_s=transfer_after if hand_over else None)
    return plan, risk


def build_chat_plans(scenario: Scenario, run: str, menu: dict[str, int]) -> list[Plan]:
    """Every chat/SNS conversation of the scenario (none without ``chat:``), from generators of their
    own: the callers' draws, and so a phone-only replay, are the same with or without them."""
    chat = scenario.chat
    if chat is None:
        return []
    d, p, c, r = scenario.demand, scenario.platform, scenario.counsellors, scenario.receivers
    users_rng = random.Random(f"{scenario.seed}:chat-users")
    users: list[str] = []
    plans: list[Plan] = []
    offsets = _offsets(scenario, chat.count(d.attempts), chat.hourly, "chat-arrivals")
    for n, arrive in enumerate(offsets):
        rng = random.Random(f"{scenario.seed}:chat:{n}")
        if users and users_rng.random() < chat.repeat_share:
            user = users_rng.choice(users)
        else:
            user = f"U{users_rng.getrandbits(128):032x}"  # the platform's user id form (LINE: U + 32 hex)
            users.append(user)
        region = _pick(rng, d.prefectures)
        field_code = _pick(rng, chat.fields)
        talk_plan, risk = _chat_plan(chat, rng, field_code)
        rings = [(rng.uniform(*p.pickup_s), rng.random() >= p.no_pickup) for _ in range(MAX_RINGS)]
        mean, sigma = c.talk(field_code), c.talk_sigma
        phone_talk = max(30.0, rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma))
        plans.append(Plan(
            n=n, contact_id=f"{run}-c{n:06d}", caller_id=user, region=region, arrive=arrive,
            ivr_abandon=talk_plan.silent, ivr_s=talk_plan.typing_s, field=None if talk_plan.silent else field_code,
            menu_key=menu.get(field_code, 0), patience_s=rng.expovariate(1.0 / chat.patience(field_code)),
            rings=rings, talk_s=phone_talk, wrapup_s=rng.uniform(*c.wrapup_s),
            consultation=_consultation(scenario, rng, field_code, region, risk),
            receiver_delays=(rng.uniform(*r.acknowledge_s), rng.uniform(*r.accept_s), rng.uniform(*r.complete_s)),
            outcome=_pick(rng, r.outcomes), chat=talk_plan))
    return plans

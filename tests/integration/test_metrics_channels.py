"""metrics by channel and its chat/SNS seat figures, as its own process on the real broker and PostgreSQL:
a mixed phone, chat and SNS log (triage, offers withdrawn, transfers) published twice over in part and
out of order gives over HTTP exactly what the definitions give from the events."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import httpx
import pytest

from services.metrics.domain.counting import answer_rate_counts
from services.metrics.domain.facts import fold
from services.metrics.domain.occupancy import SEAT_DIMENSIONS, seat_counts, spells
from services.metrics.domain.periods import Period
from tests.integration.metrics_channel_support import (
    abandoned,
    answered,
    assigned,
    channel_log,
    ended,
    received,
    transferred,
    triaged,
)
from tests.integration.metrics_support import TRIAL1, by_key, issue_keys, publish, start_metrics, validated

pytestmark = pytest.mark.integration

WEEK = Period(TRIAL1, TRIAL1 + timedelta(days=7))
COUNTS = ("attempts", "connected", "abandoned", "callers", "callers_connected")
SEAT_NUMBERS = ("conversations", "seats", "held_seconds", "in_use_seconds", "capacity_seconds")

# a phone call answered; a chat answered at chat-a, transferred to chat-b and answered again there; an SNS
# contact that leaves before the first response
HAND_MADE = [
    received("h-p", 0, "phone", caller=900), assigned("h-p", 5, "tel-a", None, None, "phone"),
    answered("h-p", 20, 15.0, "tel-a"), ended("h-p", 620),
    received("h-c", 0, "chat", caller=901), triaged("h-c", 3, "high"), assigned("h-c", 10, "chat-a", 1, 3),
    answered("h-c", 70, 70.0, "chat-a"), transferred("h-c", 670, "chat-a", "chat-b"),
    assigned("h-c", 671, "chat-b", 2, 3, reason="transferred", n=2), answered("h-c", 700, 700.0, "chat-b", n=2),
    ended("h-c", 1270),
    received("h-s", 0, "sns", caller=902), assigned("h-s", 8, "chat-b", 1, 3, "sns"), abandoned("h-s", 68, "ringing"),
]


@pytest.fixture
async def metrics(settings, create_all_topics, tmp_path):
    await create_all_topics(settings)
    keys = await issue_keys(settings)
    running = await asyncio.to_thread(start_metrics, settings, keys, tmp_path / "metrics.log",
                                      TSUNAGU_METRICS_LIVE_SECONDS="0.3")
    try:
        yield running
    finally:
        await asyncio.to_thread(running.process.stop)


def http_counts(body):
    out = {"total": {k: body["totals"][k] for k in COUNTS}}
    for key, g in by_key(body["groups"]).items():
        out[key] = {k: g[k] for k in COUNTS}
    return out


def http_seats(body):
    out = {"total": {k: body["totals"][k] for k in SEAT_NUMBERS}}
    for key, g in by_key(body["groups"]).items():
        out[key] = {k: g[k] for k in SEAT_NUMBERS}
    return out


def expected_seats(facts, dimension, organisation=None):
    got = seat_counts(spells(facts.seat_events.values(), facts.contacts), WEEK, dimension, organisation)
    return {k: {n: pytest.approx(g[n], abs=0.01) for n in SEAT_NUMBERS} for k, g in got.items()}


async def test_figures_by_channel_and_seat_figures_are_exact_under_duplicates_and_reordering(metrics, settings):
    log = HAND_MADE + channel_log(400, seed=31, span=timedelta(days=2))
    rnd = random.Random(31)
    sent = log + rnd.sample(log, 150) + [HAND_MADE[8]]  # some twice, the transfer among them
    rnd.shuffle(sent)
    await publish(settings, sent)
    await metrics.wait_until_consumed(len(log))
    facts = fold(validated(log))

    for channel in ("phone", "chat", "sns", "all"):
        for dimension in (None, "channel", "desk", "field", "day", "hour"):
            params = {"period": "trial1", "channel": channel, **({"group_by": dimension} if dimension else {})}
            response = await metrics.get("/v1/metrics/answer-rate", **params)
            assert response.status_code == 200, response.text
            want = {k: {n: g[n] for n in COUNTS} for k, g in answer_rate_counts(
                facts.contacts.values(), WEEK, dimension, channel=None if channel == "all" else channel).items()}
            assert http_counts(response.json()) == want, (channel, dimension)

    for dimension in (None, *SEAT_DIMENSIONS):
        response = await metrics.get("/v1/metrics/seats", period="trial1", **({"group_by": dimension} if dimension
                                                                              else {}))
        assert response.status_code == 200, response.text
        got = http_seats(response.json())
        assert got["total"]["conversations"] > 0 and (dimension is None or len(got) > 2), dimension
        assert got == expected_seats(facts, dimension), dimension


async def test_a_transfer_is_one_contact_one_connection_and_each_seat_reads_its_part(metrics, settings):
    sent = HAND_MADE + HAND_MADE[6:10]  # the chat's assignment, answer and transfer arrive twice
    random.Random(4).shuffle(sent)
    await publish(settings, sent)
    await metrics.wait_until_consumed(len(HAND_MADE))

    by_channel = by_key((await metrics.get("/v1/metrics/answer-rate", period="trial1", group_by="channel")).json()
                        ["groups"])
    assert {k: (g["attempts"], g["connected"], g["abandoned"]) for k, g in by_channel.items()} == {
        "phone": (1, 1, 0), "chat": (1, 1, 0), "sns": (1, 0, 1)}
    chat_desks = by_key((await metrics.get("/v1/metrics/answer-rate", period="trial1", channel="chat",
                                           group_by="desk")).json()["groups"])
    assert chat_desks.keys() == {"chat-a"}  # answered first there
    waits = (await metrics.get("/v1/metrics/waits", period="trial1", channel="chat")).json()
    assert (waits["totals"]["connected"], waits["totals"]["wait_mean"]) == (1, 70.0)  # the first response
    waits = by_key((await metrics.get("/v1/metrics/waits", period="trial1", group_by="channel")).json()["groups"])
    assert {k: (g["connected"], g["wait_mean"]) for k, g in waits.items()} == {
        "phone": (1, 15.0), "chat": (1, 70.0), "sns": (0, None)}

    body = (await metrics.get("/v1/metrics/seats", period="trial1", group_by="desk")).json()
    desks = by_key(body["groups"])
    # chat-a: the chat 10 s → 670 s; chat-b: the chat 671 s → 1,270 s, the SNS offer 8 s → 68 s (left first)
    assert (desks["chat-a"]["conversations"], desks["chat-a"]["held_seconds"]) == (1, 660.0)
    # the SNS person left before a first response: the seat was held, no conversation
    assert (desks["chat-b"]["conversations"], desks["chat-b"]["held_seconds"]) == (1, 599.0 + 60.0)
    assert desks["chat-a"]["occupancy"] == round(660 / (660 * 3), 6)
    assert desks["chat-a"]["conversations_per_seat_hour"] == round(3600 / 660, 6)
    assert "tel-a" not in desks  # a phone line is not a seat
    assert body["definitions"]["occupancy"]["ja"] == "席の占有率"

    mine = (await metrics.get("/v1/metrics/seats", "npo-b", period="trial1", group_by="desk")).json()
    assert {g["key"] for g in mine["groups"]} == {"chat-b"}
    assert (await metrics.get("/v1/metrics/seats", "npo-a", period="trial1")).json()["totals"]["conversations"] == 1
    async with httpx.AsyncClient(base_url=metrics.url) as client:
        assert (await client.get("/v1/metrics/seats", params={"period": "trial1"})).status_code == 401
        csv = await client.get("/v1/metrics/seats", params={"period": "trial1", "group_by": "desk"},
                               headers=metrics.headers(Accept="text/csv"))
    lines = csv.text.splitlines()
    assert lines[0].startswith("key,label_ja,label_en,conversations,seats,held_seconds")
    assert lines[1].startswith("total,合計,total,2,") and len(lines) == 4

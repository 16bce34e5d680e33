"""Figures as the secretariat reads them: rows from store.reading with rates, percentiles and labels.

Shared by the HTTP API and the CLI (report, plan), so both say exactly the same thing.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from schemas.codes import AgeBand, ConsultationCategory, LabelledCode, RiskLevel
from services.metrics.domain.counting import (
    CONSULTATION_DIMENSIONS,
    DIMENSIONS,
    REFERRAL_DIMENSIONS,
    key_label,
    rate,
)
from services.metrics.domain.periods import Period
from services.metrics.store import occupancy, reading

Conn = asyncpg.Connection | asyncpg.Pool


# the same figures on every channel: a chat's or SNS conversation's answer is the counsellor's first response
CONTACT_DEFINITIONS = {
    "connected": {"ja": "接続完了（チャット・SNSは初回応答）", "en": "connected (chat and SNS: first response)"},
    "abandoned": {"ja": "放棄（チャット・SNSは初回応答前の離脱）", "en": "abandoned (chat and SNS: left before the "
                  "first response)"},
    "wait": {"ja": "応答までの待ち時間（チャット・SNSは初回応答までの時間）",
             "en": "time to answer (chat and SNS: time to first response)"},
}


def _answer_rates(row: dict[str, Any]) -> dict[str, Any]:
    row["answer_rate"] = rate(row["connected"], row["attempts"])
    row["abandon_rate"] = rate(row["abandoned"], row["attempts"])
    row["caller_rate"] = rate(row["callers_connected"], row["callers"])
    return row


def _labelled(dimension: str | None, groups: list[dict[str, Any]], codes: dict) -> list[dict[str, Any]]:
    out = []
    for g in groups:
        key = g.pop("key")
        out.append({"key": key, "label": key_label(dimension or "", key, codes), **g})
    return out


def _envelope(period: Period, group_by: str | None, organisation: str | None, totals: dict, groups: list,
              **extra: Any) -> dict[str, Any]:
    return {
        "period": period.as_dict(), "group_by": group_by, "organisation": organisation,
        "totals": totals, "groups": groups, **extra,
    }


async def answer_rate(conn: Conn, period: Period, group_by: str | None, *, channel: str | None = "phone",
                      organisation: str | None = None) -> dict[str, Any]:
    totals, groups = await reading.answer_rate(conn, period, group_by, channel, organisation)
    totals = _answer_rates(totals)
    groups = _labelled(group_by, [_answer_rates(g) for g in groups], DIMENSIONS)
    return _envelope(period, group_by, organisation, totals, groups, channel=channel, definitions=CONTACT_DEFINITIONS)


def _percentiles(values: list[float] | None, names: tuple[str, ...]) -> dict[str, float | None]:
    if values is None:
        return dict.fromkeys(names)
    return {n: round(v, 3) if v is not None else None for n, v in zip(names, values, strict=True)}


def _wait_row(row: dict[str, Any], within: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attempts": row["attempts"], "connected": row["connected"],
        "wait_mean": round(row["wait_mean"], 3) if row["wait_mean"] is not None else None,
        **_percentiles(row["wait_p"], ("wait_p50", "wait_p90", "wait_p95")),
        "talk_mean": round(row["talk_mean"], 3) if row["talk_mean"] is not None else None,
        **_percentiles(row["talk_p"], ("talk_p50", "talk_p90")),
        "abandoned_queue": row["abandoned_queue"],
        **_percentiles(row["abandon_wait_p"], ("abandon_wait_p50", "abandon_wait_p90")),
    }
    for n in within:
        out[f"answered_within_{n}s"] = row[f"within_{n}"]
        # service level: of all attempts, the share answered within n seconds
        out[f"service_level_{n}s"] = rate(row[f"within_{n}"], row["attempts"])
    return out


async def waits(conn: Conn, period: Period, group_by: str | None, within: list[int], *,
                channel: str | None = "phone", organisation: str | None = None) -> dict[str, Any]:
    totals, groups = await reading.waits(conn, period, group_by, within, channel, organisation)
    rows = [{"key": g["key"], **_wait_row(g, within)} for g in groups]
    return _envelope(period, group_by, organisation, _wait_row(totals, within) if totals else {},
                     _labelled(group_by, rows, DIMENSIONS), channel=channel, within_seconds=within,
                     definitions=CONTACT_DEFINITIONS)


def _ranked(counts: list[tuple[str, int]], code_list: type[LabelledCode], total: int) -> list[dict[str, Any]]:
    out = []
    for code, n in counts:
        out.append({**key_label("x", code, {"x": code_list}), "count": n, "share": rate(n, total)})
    return out


async def consultations(conn: Conn, period: Period, group_by: str | None, *,
                        organisation: str | None = None) -> dict[str, Any]:
    totals, groups, breakdowns = await reading.consultations(conn, period, group_by, organisation)
    total = totals.get("consultations", 0)
    totals["categories"] = _ranked(breakdowns["categories"], ConsultationCategory, total)
    totals["age_bands"] = _ranked(breakdowns["age_bands"], AgeBand, total)
    totals["risks"] = _ranked(breakdowns["risks"], RiskLevel, total)
    return _envelope(period, group_by, organisation, totals, _labelled(group_by, groups, CONSULTATION_DIMENSIONS))


def _referral_row(row: dict[str, Any]) -> dict[str, Any]:
    ack = row.pop("ack_p")
    row.update(_percentiles([float(v) if v is not None else None for v in ack] if ack else None,
                            ("ack_seconds_p50", "ack_seconds_p90")))
    row["acknowledged_rate"] = rate(row["acknowledged"], row["referrals"])
    return row


async def referrals(conn: Conn, period: Period, group_by: str | None, *,
                    organisation: str | None = None) -> dict[str, Any]:
    totals, groups = await reading.referrals(conn, period, group_by, organisation)
    return _envelope(period, group_by, organisation, _referral_row(totals),
                     _labelled(group_by, [_referral_row(g) for g in groups], REFERRAL_DIMENSIONS))


SEAT_GROUPS: dict[str, type[LabelledCode] | None] = {"desk": None, "organisation": None, "hour": None, "day": None}
# what the seat figures say, for whoever reads them (README: definitions)
SEAT_DEFINITIONS = {
    "conversations": {"ja": "会話数", "en": "conversations: a contact's time at a seat with its first response "
                      "by then (an offer withdrawn or a person who left before it held the seat, no conversation)"},
    "held_seconds": {"ja": "会話保持秒", "en": "seconds conversations held seats"},
    "in_use_seconds": {"ja": "席使用秒", "en": "seconds seats held at least one conversation"},
    "capacity_seconds": {"ja": "席容量秒", "en": "in-use seconds × conversations a seat holds (N)"},
    "seats": {"ja": "使用席数", "en": "seats in use"},
    "occupancy": {"ja": "席の占有率", "en": "seat occupancy: held seconds / capacity seconds"},
    "conversations_per_seat_hour": {"ja": "席あたり時間あたり会話数",
                                    "en": "conversations per seat-hour: conversations / in-use seat-hours"},
}


def _seat_row(row: dict[str, Any]) -> dict[str, Any]:
    held, in_use, capacity = (float(row[n] or 0) for n in ("held_seconds", "in_use_seconds", "capacity_seconds"))
    return {
        "conversations": row["conversations"], "seats": row["seats"], "held_seconds": round(held, 3),
        "in_use_seconds": round(in_use, 3), "capacity_seconds": round(capacity, 3),
        "occupancy": round(held / capacity, 6) if capacity else None,
        "conversations_per_seat_hour": round(row["conversations"] * 3600 / in_use, 6) if in_use else None,
    }


async def seats(conn: Conn, period: Period, group_by: str | None, *, organisation: str | None = None) -> dict[str, Any]:
    """Chat and SNS seats: conversations per seat-hour and occupancy (domain.occupancy's definitions)."""
    totals, groups = await occupancy.seat_figures(conn, period, group_by, organisation)
    rows = [{"key": g["key"], **_seat_row(g)} for g in groups]
    return _envelope(period, group_by, organisation, _seat_row(totals), _labelled(group_by, rows, SEAT_GROUPS),
                     definitions=SEAT_DEFINITIONS)


FLAT_SKIP = {"label", "categories", "age_bands", "risks"}


def csv_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Totals first, then one row per group: key, Japanese and English labels, every number."""
    rows = [{"key": "total", "label_ja": "合計", "label_en": "total",
             **{k: v for k, v in figures["totals"].items() if k not in FLAT_SKIP}}]
    for g in figures["groups"]:
        rows.append({"key": g["key"], "label_ja": g["label"]["ja"], "label_en": g["label"]["en"],
                     **{k: v for k, v in g.items() if k not in FLAT_SKIP | {"key"}}})
    return rows

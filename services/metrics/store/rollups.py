"""The rollups, moved by deltas: each changed row's old and new contribution, inside the batch.

A live batch's upsert returns each changed row's old and new version (PostgreSQL 18 ``RETURNING old.*,
new.*``) and moves the rollups (migration 002) by the difference between the two contributions, inside
the batch's transaction — so the rollups always equal what the facts would give from scratch
(store.rebuild). A contact contributes to contact_rollup / contact_hist exactly as the secretariat
counts it (store.sql.contact_view); the same SQL turns a row of the facts into its contribution in three
places: the deltas of a batch (old row −1, new row +1), the rebuild of the rollups from the facts, and
the edges of a period read straight from the facts. A batch also lists the contacts it changed, whose
callers' links move later (store.callers.derive_links).
"""

from __future__ import annotations

import asyncpg

from services.metrics.store.facts import (
    CONSULTATIONS_UPSERT,
    CONTACTS_UPSERT,
    REFERRALS_UPSERT,
    FactRows,
    apply_seat_events,
)
from services.metrics.store.sql import (
    CONTACT_MEASURES,
    GRAINS_SQL,
    HOUR_TEXT,
    ROLLUP_MEASURES,
    TZ_SQL,
    VIEW_NAMES,
    S,
    bin_sql,
    contact_view,
)

GRAIN_BUCKET = (f"CASE g.grain WHEN 'd' THEN date_trunc('day', received_at, {TZ_SQL}) "
                f"ELSE date_trunc('month', received_at, {TZ_SQL}) END")
# contact cubes: 0 none, 1 field, 2 desk, 3 prefecture, 4 hour of day
CONTACT_CUBE_KEY = ("CASE c.cube WHEN 1 THEN field WHEN 2 THEN desk WHEN 3 THEN prefecture "
                    f"WHEN 4 THEN {HOUR_TEXT.format(t='received_at')} END")
_ADD = ", ".join(f"{m} = t.{m} + EXCLUDED.{m}" for m in ROLLUP_MEASURES)
# groups whose every measure the delta leaves unchanged are not written (a contact whose talk time
# changed moves only the talk sums)
_ROLLUP_MOVED = "HAVING " + " OR ".join(f"sum({m}) <> 0" for m in ROLLUP_MEASURES)
# what places a contact in every cube's group and bucket: the hour it arrived (Japan time is a whole
# number of hours from UTC, so the UTC hour keeps its day, month and hour of day) and the group values
_PLACE = "date_trunc('hour', received_at) AS received_at, channel, organisation, field, desk, prefecture"


def contact_rollup_sql(delta: str, grains: str = GRAINS_SQL) -> str:
    """The delta summed by place first, then crossed with grains and cubes."""
    return f"""INSERT INTO {S}.contact_rollup AS t
            (cube, grain, bucket, channel, organisation, k, {", ".join(ROLLUP_MEASURES)})
        SELECT c.cube, g.grain, {GRAIN_BUCKET}, channel, organisation, {CONTACT_CUBE_KEY},
               {", ".join(f"sum({m})" for m in ROLLUP_MEASURES)}
          FROM (SELECT {_PLACE}, {CONTACT_MEASURES} FROM {delta} GROUP BY 1, 2, 3, 4, 5, 6) v
               CROSS JOIN {grains} CROSS JOIN generate_series(0, 4) c(cube)
         GROUP BY 1, 2, 3, 4, 5, 6 {_ROLLUP_MOVED} ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (cube, grain, bucket, channel, organisation, k) DO UPDATE SET {_ADD}"""


def contact_hist_sql(delta: str, grains: str = GRAINS_SQL) -> str:
    """Histograms of every cube (so waits by any group come from them): the values binned and summed by
    place first (a contact's old and new value that cancel — a wait unchanged when the talk time arrives —
    drop out), then crossed with grains and cubes."""
    return f"""INSERT INTO {S}.contact_hist AS t (cube, grain, bucket, measure, channel, organisation, k, bin, n)
        SELECT c.cube, g.grain, {GRAIN_BUCKET}, measure, channel, organisation, {CONTACT_CUBE_KEY}, bin, sum(sign)
          FROM (SELECT {_PLACE}, m.measure,
                       {bin_sql("m.value")} AS bin, sum(sign) AS sign
                  FROM {delta}
                       CROSS JOIN LATERAL (VALUES ('w'::"char", wait), ('t'::"char", talk),
                                                  ('a'::"char", queue_wait)) m(measure, value)
                 WHERE m.value IS NOT NULL
                 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 HAVING sum(sign) <> 0) v
               CROSS JOIN {grains} CROSS JOIN generate_series(0, 4) c(cube)
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 HAVING sum(sign) <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
        ON CONFLICT (cube, grain, bucket, measure, channel, organisation, k, bin) DO UPDATE SET n = t.n + EXCLUDED.n"""


_RETURN_CONTACT = (
    "RETURNING new.contact_id, " + contact_view(lambda col: f"old.{col}", lambda n: f"o_{n}") + ", "
    + contact_view(lambda col: f"new.{col}", lambda n: f"n_{n}")
)
_O = ", ".join(f"o_{n}" for n in VIEW_NAMES)
_N = ", ".join(f"n_{n}" for n in VIEW_NAMES)
CONTACTS_APPLY = f"""
WITH up AS ({CONTACTS_UPSERT} {_RETURN_CONTACT}),
changed AS (SELECT * FROM up WHERE ROW({_O}) IS DISTINCT FROM ROW({_N})),
delta AS (
    SELECT -1 AS sign, {", ".join(f"o_{n} AS {n}" for n in VIEW_NAMES)} FROM changed WHERE o_received_at IS NOT NULL
    UNION ALL
    SELECT 1, {", ".join(f"n_{n}" for n in VIEW_NAMES)} FROM changed WHERE n_received_at IS NOT NULL),
r AS ({contact_rollup_sql("delta")}),
h AS ({contact_hist_sql("delta")})
INSERT INTO {S}.caller_links_pending (contact_id) SELECT contact_id FROM changed
"""


# consultation cubes: 0 none, 1 field, 2 desk, 3 age band, 4 risk, 5 hour of day, 6 category
CONSULTATION_VIEW_NAMES = ["recorded_at", "organisation_id", "desk_id", "field", "categories", "age_band", "risk",
                           "referral_needed"]


def consultation_rollup_sql(delta: str, grains: str = GRAINS_SQL) -> str:
    bucket = GRAIN_BUCKET.replace("received_at", "recorded_at")
    key = ("CASE c.cube WHEN 1 THEN field WHEN 2 THEN desk_id WHEN 3 THEN age_band WHEN 4 THEN risk "
           f"WHEN 5 THEN {HOUR_TEXT.format(t='recorded_at')} WHEN 6 THEN cat.code END")
    return f"""INSERT INTO {S}.consultation_rollup AS t
            (cube, grain, bucket, organisation, k, consultations, referral_needed, high_risk)
        SELECT c.cube, g.grain, {bucket}, organisation_id, {key}, sum(sign), sum(sign * referral_needed::int),
               sum(sign * (risk IN ('high', 'imminent'))::int)
          FROM {delta} CROSS JOIN {grains} CROSS JOIN generate_series(0, 6) c(cube)
               CROSS JOIN LATERAL (SELECT NULL::text AS code WHERE c.cube <> 6
                                   UNION ALL SELECT u FROM unnest(categories) u WHERE c.cube = 6) cat
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (cube, grain, bucket, organisation, k) DO UPDATE
           SET consultations = t.consultations + EXCLUDED.consultations,
               referral_needed = t.referral_needed + EXCLUDED.referral_needed,
               high_risk = t.high_risk + EXCLUDED.high_risk"""


_CO = ", ".join(f"old.{n} AS o_{n}" for n in CONSULTATION_VIEW_NAMES)
_CN = ", ".join(f"new.{n} AS n_{n}" for n in CONSULTATION_VIEW_NAMES)
CONSULTATIONS_APPLY = f"""
WITH up AS ({CONSULTATIONS_UPSERT} RETURNING {_CO}, {_CN}),
changed AS (SELECT * FROM up WHERE ROW({", ".join(f"o_{n}" for n in CONSULTATION_VIEW_NAMES)})
                                   IS DISTINCT FROM ROW({", ".join(f"n_{n}" for n in CONSULTATION_VIEW_NAMES)})),
delta AS (
    SELECT -1 AS sign, {", ".join(f"o_{n} AS {n}" for n in CONSULTATION_VIEW_NAMES)} FROM changed
     WHERE o_recorded_at IS NOT NULL
    UNION ALL
    SELECT 1, {", ".join(f"n_{n}" for n in CONSULTATION_VIEW_NAMES)} FROM changed WHERE n_recorded_at IS NOT NULL)
{consultation_rollup_sql("delta")}
"""


async def apply_rows(conn: asyncpg.Connection, rows: FactRows) -> None:
    """Combine a batch's facts with the stored ones — one set-based statement per table, which also
    moves the rollups by the difference between each changed row's old and new contribution. The
    callers' links of the contacts it changed are left to derive_links (migration 006)."""
    if rows.contacts is not None:
        await conn.execute(CONTACTS_APPLY, *rows.contacts)  # also lists the changed ones for derive_links
    if rows.consultations is not None:
        await conn.execute(CONSULTATIONS_APPLY, *rows.consultations)
    if rows.referrals is not None:
        await conn.execute(REFERRALS_UPSERT, *rows.referrals)
    await apply_seat_events(conn, rows)

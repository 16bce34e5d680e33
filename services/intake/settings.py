"""Intake's own knobs (``TSUNAGU_INTAKE_*``): partners' rates, fair shares of a saturated process, the
times an event may carry. The shared ones are tsunagu.settings.Settings'."""

from __future__ import annotations

from pydantic import Field, model_validator

from tsunagu.settings import Settings


class IntakeSettings(Settings):
    intake_rate_per_s: float = Field(
        200.0, ge=0, description="events a second each live partner key's organisation may send over HTTP, per "
        "intake process (token bucket; 0 = no limit). Half of what one intake process sustains on the 2-core "
        "reference host for single events (~400-550/s; ~5,000-6,000/s in batches of 100), so that one partner at "
        "its rate leaves room for the others: measured, it moves another partner's p95 by about 2x, 400/s by "
        "2.4-3x (bench/fairness.py, bench/RESULTS.md); ~4-10x the busiest partner's expected peak (the national "
        "carrier at ~14 M calls a year, a few events per call)",
    )
    intake_burst: int = Field(
        1_000, ge=1, description="events a partner organisation may send at once before the rate applies (live "
        "keys; back-fill keys too when TSUNAGU_INTAKE_BACKFILL_RATE_PER_S is set): 5 s at the default rate, so "
        "that one partner cannot fill a process for long (bench/fairness.py)",
    )
    intake_backfill_rate_per_s: float = Field(
        0.0, ge=0, description="events a second a back-fill key (`tsunagu credentials issue --backfill`: a "
        "replay of a past period, arranged by the operator) may send per intake process (0 = no limit: a "
        "replay runs as fast as intake takes it, still within its fair share)",
    )
    # Fair shares of a saturated intake (tsunagu/fairness.py); defaults from bench/fairness.py (bench/RESULTS.md).
    intake_in_flight: int = Field(
        8, ge=0, le=10_000, description="HTTP requests one intake process works on at once, all partner "
        "organisations together; with several organisations present, one takes at most this divided by their "
        "number, and a freed slot goes to the one with the fewest in progress (0 = no bound, per organisation "
        "either). Throughput stops growing at ~2-4 in progress on the 2-core reference host (bench/fairness.py)",
    )
    intake_org_in_flight: int = Field(
        2, ge=1, le=10_000, description="HTTP requests of one partner organisation one intake process works on "
        "at once; more wait their turn. 2 keeps another partner's p95 within 2x of its own during a flood of "
        "single events (4: 2.8x) and leaves one partner alone 96 % of a process's batch throughput (bench/fairness.py)",
    )
    intake_org_queue: int = Field(
        64, ge=0, le=10_000, description="requests of one partner organisation that may wait for a turn in one "
        "intake process; beyond them, or after TSUNAGU_INTAKE_QUEUE_WAIT_S, 429 with Retry-After",
    )
    intake_queue_wait_s: float = Field(
        2.0, ge=0, le=60, description="how long (seconds) a partner's request waits for its turn before it is "
        "answered 429 with Retry-After (nothing stored)",
    )
    intake_turn_events: int = Field(
        16, ge=0, le=100_000, description="events intake validates before it lets another request take a turn "
        "on its event loop (0 = a whole batch at once)",
    )
    intake_store_events: int = Field(
        32, ge=0, le=100_000, description="while other partner organisations are sending too, events intake "
        "stores in one transaction: a larger request is stored in parts, a quiet partner's request going first "
        "in between (0 = a whole request at once; alone, a request is always stored at once)",
    )
    intake_give_way_s: float = Field(
        0.05, ge=0, le=1, description="how long (seconds) intake's other work — a busy partner's batches at each "
        "turn, the Kafka door, the outbox — waits at one turn while a quiet partner's request is in progress "
        "(0 = no precedence: turns are taken first come)",
    )
    intake_max_skew_s: float = Field(
        300.0, ge=0, le=86_400, description="intake refuses an event whose time is further than this ahead of "
        "its own clock (seconds): a partner's clock may be a little fast, never years",
    )
    intake_horizon_s: float = Field(
        7 * 86_400.0, gt=0, description="intake refuses an event older than this (seconds) unless the key may "
        "back-fill (`tsunagu credentials issue --backfill`): late uploads after an outage pass, a past period "
        "is replayed only on purpose",
    )

    @model_validator(mode="after")
    def _a_full_batch_fits_the_burst(self) -> IntakeSettings:
        if self.intake_rate_per_s > 0 and self.intake_burst < self.max_batch_events:
            raise ValueError(
                f"TSUNAGU_INTAKE_BURST ({self.intake_burst}) must be at least TSUNAGU_MAX_BATCH_EVENTS "
                f"({self.max_batch_events}), or a full batch could never be accepted"
            )
        return self

"""Settings: every knob tsunagu reads from the environment, validated once at start.

Variables carry the prefix ``TSUNAGU_``, except the two that deployments share with other
software: ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS``. Read them through
``get_settings()``; never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_CALLER_KEY_SECRET = "tsunagu-dev-only-secret-do-not-use-in-production"


class SettingsError(SystemExit):
    """A bad setting: the message names the variable, what was wrong, and exits the process."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TSUNAGU_", extra="ignore", frozen=True)

    env: Literal["dev", "prod"] = Field("dev", description="dev allows built-in secrets; prod refuses them")
    home: Path = Field(Path(".tsunagu"), description="local stack state: data, logs, pid files")

    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "TSUNAGU_DATABASE_URL"),
        description="PostgreSQL DSN; unset = embedded PostgreSQL of the local stack",
    )
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "TSUNAGU_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset = the embedded broker of the local stack",
    )
    broker_port: int = Field(29092, ge=1, le=65535, description="port of the embedded broker")
    partitions: int = Field(12, ge=1, le=1000, description="partitions per topic created by the stack")
    topic_prefix: str = Field(
        "tsunagu.", pattern=r"^[A-Za-z0-9._-]*$", description="prefix of every topic name"
    )

    intake_port: int = Field(8081, ge=1, le=65535)
    routing_port: int = Field(8082, ge=1, le=65535)
    referral_port: int = Field(8083, ge=1, le=65535)
    metrics_port: int = Field(8084, ge=1, le=65535)
    http_host: str = Field("127.0.0.1", description="address the services' HTTP servers bind")
    workers: int = Field(1, ge=1, le=64, description="worker processes per service (HTTP and consumers)")
    http_request_read_seconds: float = Field(
        15.0, gt=0, le=300, description="how long a client may take to send a whole request (line, headers, "
        "body: a full 2 MiB batch needs about 1.1 Mbit/s), counted from its connection or from its first byte "
        "after the previous response; then the connection is closed (408 when nothing was answered yet). The "
        "service's own time to answer is not counted"
    )
    http_keep_alive_seconds: int = Field(
        5, ge=1, le=300, description="an idle kept-alive connection is closed after these seconds"
    )
    http_max_connections: int = Field(
        1000, ge=1, le=100_000, description="connections one service process holds; beyond it a new connection "
        "is closed at once, and at it requests are answered 503 (uvicorn's limit_concurrency)"
    )

    caller_key_secret: SecretStr | None = Field(
        None, description="HMAC secret that turns caller identifiers into caller keys"
    )
    default_region: str = Field("JP", pattern=r"^[A-Z]{2}$", description="region for phone numbers")
    max_batch_events: int = Field(500, ge=1, le=10_000, description="most events in one HTTP batch")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="largest HTTP request body")
    max_event_bytes: int = Field(64 * 1024, ge=512, description="largest single event")
    outbox_batch: int = Field(1000, ge=1, le=50_000, description="events published per outbox round")
    outbox_retain_seconds: float = Field(
        0.0, ge=0, le=86_400, description="how long a published event stays in its outbox, to be published "
        "again if the broker lost it (an in-memory broker restarted); 0 = removed once published. "
        "`tsunagu up` sets 600 for the embedded broker"
    )
    consumer_lag_seconds: float = Field(
        5.0, gt=0, le=300, description="how often each service measures its consumers' lag (tsunagu_consumer_lag)"
    )
    # Latency knobs (the defaults suit throughput; `tsunagu up --replay` lowers them, see stack.REPLAY_ENV).
    # The embedded broker does not wake a waiting fetch when data arrives (docs/reference-host.md): a consumer's
    # fetch wait bounds its latency, and a producer's linger adds to every record it publishes.
    outbox_poll_seconds: float = Field(
        0.2, gt=0, le=60, description="how often an outbox looks for records nobody woke it for (leftovers, "
        "other instances'); new records are published at once"
    )
    producer_linger_ms: int = Field(
        5, ge=0, le=1000, description="how long the services' producers wait to fill a batch (the embedded "
        "broker slows on many tiny batches at high rates)"
    )
    routing_fetch_wait_ms: int = Field(
        20, ge=1, le=5000, description="how long routing's consumer waits on the broker for contact events "
        "(bounds routing's latency on the embedded broker; lower costs more idle fetches)"
    )
    routing_order: Literal["arrival", "event_time"] = Field(
        "arrival", description="arrival: routing applies each contact event as soon as it reads it (live: an "
        "assignment never waits for other partitions; only timers wait until every partition passed them); "
        "event_time: it holds each event until every partition has been read past its time and applies them "
        "in event-time order (replays: decisions independent of the order partitions are read in)"
    )
    routing_max_clock_lead_s: float = Field(
        300.0, gt=0, le=86_400, description="how far (seconds) an event's time may run ahead of routing's wall "
        "clock and still move routing's event time: a heartbeat further ahead is ignored, a contact event "
        "further ahead is applied at the wall clock plus this lead (a partner's clock may be a little fast, never "
        "years)"
    )
    replay_fetch_wait_ms: int = Field(
        5, ge=1, le=5000, description="how long `tsunagu simulate` waits on the broker for routing's decisions"
    )
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

    # referral (issue 4)
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

    consumer_group_prefix: str = Field(
        "", max_length=100, description="put before every consumer group's name, so that several stacks can "
        "share one broker without sharing groups (the tests give each test its own)",
    )

    # metrics (issue 5)
    metrics_consumer_group: str = Field(
        "metrics", min_length=1, description="metrics' consumer group; a new name replays every topic from the "
        "start (a rebuild into an empty schema)",
    )
    metrics_periods_file: Path | None = Field(
        None, description="YAML file of named periods (trial1, ...); unset = config/periods.yaml of the repository"
    )
    metrics_live_seconds: float = Field(
        5.0, gt=0, le=300, description="how often metrics refreshes its live gauges (queue, busy lines, 15-min rate)"
    )

    routing_desks_files: str = Field(
        "config/trial1.yaml,config/trial2.yaml",
        description="desk registry versions routing applies at start when not yet stored (comma-separated "
        "YAML files; relative to the working directory or the project root; empty = none)",
    )

    telemetry_dir: Path | None = Field(
        None, description="write spans and metrics as JSON lines into this folder (`tsunagu up --telemetry`); "
        "OTLP export is configured by the standard OTEL_* variables",
    )

    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _no_weak_secret_outside_dev(self) -> Settings:
        # Only intake pseudonymises, so only intake requires the secret (caller_secret()); a
        # service that is given one anyway must not be given a weak one.
        if self.env != "dev" and self.caller_key_secret is not None:
            if self.caller_key_secret.get_secret_value() == DEV_CALLER_KEY_SECRET:
                raise ValueError("TSUNAGU_CALLER_KEY_SECRET is the built-in dev secret; set a real one")
            if len(self.caller_key_secret.get_secret_value()) < 32:
                raise ValueError("TSUNAGU_CALLER_KEY_SECRET must be at least 32 characters")
        return self

    @model_validator(mode="after")
    def _a_full_batch_fits_the_burst(self) -> Settings:
        if self.intake_rate_per_s > 0 and self.intake_burst < self.max_batch_events:
            raise ValueError(
                f"TSUNAGU_INTAKE_BURST ({self.intake_burst}) must be at least TSUNAGU_MAX_BATCH_EVENTS "
                f"({self.max_batch_events}), or a full batch could never be accepted"
            )
        return self

    def caller_secret(self) -> bytes:
        """The HMAC key of caller pseudonyms (intake's alone); outside dev it must be set."""
        if self.caller_key_secret is None:
            if self.env != "dev":
                raise SettingsError(
                    "invalid settings:\n  TSUNAGU_CALLER_KEY_SECRET must be set when TSUNAGU_ENV is not 'dev' "
                    "(caller identifiers cannot be pseudonymised without it)")
            return DEV_CALLER_KEY_SECRET.encode()
        return self.caller_key_secret.get_secret_value().encode()

    def group(self, name: str) -> str:
        """Full consumer group name for a service's group, e.g. ``routing``."""
        return f"{self.consumer_group_prefix}{name}"

    def topic(self, name: str) -> str:
        """Full topic name for a short name, e.g. ``contact.events``."""
        return f"{self.topic_prefix}{name}"

    def service_port(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))


def _describe(err: ValidationError) -> str:
    lines = ["invalid settings:"]
    for e in err.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "settings"
        shared = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
        var = loc.upper() if loc.upper() in shared else f"TSUNAGU_{loc.upper()}"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {var if loc != 'settings' else 'settings'}: {msg}")
    return "\n".join(lines)


def get_settings(**overrides: object) -> Settings:
    """Read and validate the settings; a bad value exits with a message naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise SettingsError(_describe(err)) from None

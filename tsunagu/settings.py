"""Settings: the knobs every service shares, read from the environment and validated once at start.

Variables carry the prefix ``TSUNAGU_``, except the two that deployments share with other
software: ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS``. Each service adds its own knobs in its own
module (``services/<name>/settings.py``: ``TSUNAGU_<NAME>_*``), a subclass of ``Settings`` that its
spec names (``ServiceSpec.settings``). Read them through ``get_settings(<class>)``; never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar, overload

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
    replay_fetch_wait_ms: int = Field(
        5, ge=1, le=5000, description="how long `tsunagu simulate` waits on the broker for routing's decisions"
    )
    consumer_group_prefix: str = Field(
        "", max_length=100, description="put before every consumer group's name, so that several stacks can "
        "share one broker without sharing groups (the tests give each test its own)",
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


AnySettings = TypeVar("AnySettings", bound=Settings)


@overload
def get_settings(**overrides: object) -> Settings: ...
@overload
def get_settings(cls: type[AnySettings], /, **overrides: object) -> AnySettings: ...
def get_settings(cls: type[Settings] = Settings, /, **overrides: object) -> Settings:
    """Read and validate the settings (``cls``: a service's, e.g. ``spec.settings``; the shared ones by
    default); a bad value exits with a message naming the variable."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise SettingsError(_describe(err)) from None

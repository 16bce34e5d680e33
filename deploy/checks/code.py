"""What the code declares, read by importing it: the services' specs (``services/<name>/app.py``'s
SPEC, listed in tsunagu_tools/services.py), the topics, the settings' defaults, the health routes — and the
settings a pod would start with, computed by tsunagu.settings itself."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tsunagu.service import ServiceSpec
from tsunagu.settings import Settings


@dataclass
class CodeFacts:
    specs: dict[str, ServiceSpec]
    topics: tuple[str, ...]  # short names (tsunagu.topics)
    health_paths: tuple[str, ...]
    defaults: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.specs)


def service_specs() -> tuple[dict[str, ServiceSpec], list[str]]:
    """The SPEC of each service (tsunagu_tools/services.py; each runs as ``python -m services.<name>``),
    and what is wrong with them."""
    from tsunagu_tools.services import APPS

    specs: dict[str, ServiceSpec] = {}
    problems: list[str] = []
    for name, module in APPS.items():
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, ServiceSpec) or spec.name != name:
            problems.append(f"code: {module.__name__}.SPEC is not the ServiceSpec of {name}")
            continue
        specs[name] = spec
    return specs, problems


def code_facts(given: Iterable[ServiceSpec] | None = None) -> CodeFacts:
    """The facts of the code; ``given``: these specs instead of the services' own."""
    from tsunagu import topics
    from tsunagu.health import health_router

    if given is None:
        specs, problems = service_specs()
    else:
        specs, problems = {s.name: s for s in given}, []
    # the shared settings' defaults and each service's own (its spec's settings class)
    defaults = {name: f.default for cls in (Settings, *(s.settings for s in specs.values()))
                for name, f in cls.model_fields.items()}
    for spec in specs.values():
        if spec.group_setting and defaults.get(spec.group_setting) != spec.group:
            problems.append(f"code: {spec.name}'s group is {spec.group!r}, but {spec.group_setting} defaults "
                            f"to {defaults.get(spec.group_setting)!r}")
    used = {t for s in specs.values() for t in s.consumes + s.produces}
    for topic in topics.ALL:
        if topic not in used:
            problems.append(f"code: no service's spec consumes or produces {topic} (tsunagu/topics.py)")
    return CodeFacts(specs=specs, topics=tuple(topics.ALL), defaults=defaults, problems=problems,
                     health_paths=tuple(getattr(r, "path", "") for r in health_router("check", {}).routes))


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """The process environment with tsunagu's variables replaced by ``env`` (restored after)."""
    ours = [k for k in os.environ if k.startswith("TSUNAGU_") or k in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")]
    saved = {k: os.environ.pop(k) for k in ours}
    os.environ.update(env)
    try:
        yield
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


PLACEHOLDERS = {"DATABASE_URL": "postgresql://placeholder@localhost/tsunagu",
                "TSUNAGU_CALLER_KEY_SECRET": "placeholder-secret-placeholder-secret-0123456789"}


def pod_settings(env: dict[str, str], from_secrets: list[str], cls: type[Settings] = Settings) -> Settings | str:
    """The settings a pod starts with (``cls``: its service's, ``spec.settings``; its Secrets stand in as
    placeholders), or why it would not start."""
    from tsunagu.settings import SettingsError, get_settings

    full = dict(env)
    for name in from_secrets:
        full[name] = PLACEHOLDERS.get(name, "placeholder")
    with environment({k: v for k, v in full.items() if "$(" not in v}):
        try:
            return get_settings(cls)
        except (SettingsError, SystemExit) as err:
            return f"settings: {str(err).replace(chr(10), ' ')}"

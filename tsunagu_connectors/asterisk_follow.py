"""Following a live Asterisk queue_log (``tail -f`` semantics) and resuming where it stopped.

The position (the file's device and inode, the byte offset after the last whole line sent, its line
number) and the calls still open (``asterisk_queue_log.Call``, keyed by contact-id digests: no caller
number, no uniqueid) live in a small JSON state file, written atomically only after intake answered for
everything before that position. A crash between sending and saving re-sends a stretch on restart: the
event ids come from the log's own ids, so intake answers ``duplicate`` and nothing is counted twice.

Rotation: when the path names another file (logrotate's rename, Asterisk's ``logger rotate``) the old
file is read to its end and then the new one from its start; a file shorter than the position
(``copytruncate``) is read again from its start. On restart, a saved position whose file was rotated
while the follower was down is found by its inode beside the log (``queue_log.1``), finished, and left
for the new file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tsunagu_connectors.asterisk_queue_log import Call, CallMapper, Line, parse_line
from tsunagu_connectors.report import SendReport, Unmapped

CHUNK_BYTES = 1 << 20
STATE_VERSION = 1


@dataclass
class Position:
    """Where in which file the follower stands: everything before ``offset`` was sent."""

    device: int
    inode: int
    offset: int = 0
    line: int = 0


def save_state(path: Path, partner: str, position: Position, calls: dict[str, Call]) -> None:
    """Write the state file atomically (a crash leaves the old state or the new, never half of one)."""
    body = {"version": STATE_VERSION, "partner": partner, "device": position.device, "inode": position.inode,
            "offset": position.offset, "line": position.line,
            "calls": {c: call.to_json() for c, call in calls.items()}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, separators=(",", ":")))
    os.replace(tmp, path)


def load_state(path: Path, partner: str) -> tuple[Position | None, dict[str, Call]]:
    """The saved position and open calls, or none when the follower never ran."""
    if not path.exists():
        return None, {}
    raw: dict[str, Any] = json.loads(path.read_text())
    if raw.get("version") != STATE_VERSION or raw.get("partner") != partner:
        raise ValueError("the state file belongs to another partner or version: choose another --state path")
    position = Position(raw["device"], raw["inode"], raw["offset"], raw["line"])
    return position, {c: Call.from_json(v) for c, v in raw["calls"].items()}


def identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def rotated_away(path: Path, position: Position) -> Path | None:
    """The file beside ``path`` that still holds the saved position's inode (e.g. ``queue_log.1``)."""
    for sibling in sorted(path.parent.iterdir()):
        if sibling != path and sibling.is_file() and identity(sibling) == (position.device, position.inode):
            return sibling
    return None


class Follower:
    """Reads whole lines as they are appended, maps and sends them, and saves its position after each send."""

    def __init__(self, path: Path, state_path: Path, mapper: CallMapper, send: Callable[[list[dict[str, Any]]],
                 SendReport], *, skip_unmappable: bool = False, say: Callable[[str], None] = print) -> None:
        self.path, self.state_path, self.mapper, self.send = path, state_path, mapper, send
        self.skip_unmappable, self.say = skip_unmappable, say
        self.handle: BinaryIO | None = None
        self.reading: Path = path
        self.position: Position | None = None
        self.refused = 0

    # -- opening and switching files --

    def _open(self, path: Path, offset: int = 0, line: int = 0) -> bool:
        ident = identity(path)
        if ident is None:
            return False
        if self.handle is not None:
            self.handle.close()
        self.handle = open(path, "rb")  # noqa: SIM115 - held open across polls, closed by close()
        self.reading = path
        self.position = Position(ident[0], ident[1], offset, line)
        return True

    def resume(self) -> None:
        """Open where the state file says, finding a file rotated while stopped by its inode."""
        saved, calls = load_state(self.state_path, self.mapper.partner)
        self.mapper.calls = calls
        if saved is None:
            self._open(self.path)
            return
        if identity(self.path) == (saved.device, saved.inode):
            size = os.stat(self.path).st_size
            self._open(self.path, *((saved.offset, saved.line) if size >= saved.offset else (0, 0)))
            return
        old = rotated_away(self.path, saved)
        if old is not None:
            self.say(f"resuming in the rotated log {old.name}, then {self.path.name}")
            self._open(old, saved.offset, saved.line)
            return
        self.say("the saved position's log is gone (rotated and removed while stopped): reading the log from "
                 "its start")
        self._open(self.path)

    def _switched(self) -> bool:
        """At the end of the file: move to the new file at the path, or re-read a truncated one."""
        ident = identity(self.path)
        if ident is None or self.position is None:
            return self.position is None and self._open(self.path)
        if ident != (self.position.device, self.position.inode):
            if self._whole_line_ahead():
                return True  # the old file's last lines first (a half line there never completes)
            self.say(f"{self.path.name} was rotated: reading the new file from its start")
            self._open(self.path)
            self._save()
            return True
        if os.stat(self.path).st_size < self.position.offset:
            self.say(f"{self.path.name} was truncated: reading it from its start")
            self.position.offset = self.position.line = 0
            self._save()
            return True
        return False

    def _whole_line_ahead(self) -> bool:
        assert self.handle is not None and self.position is not None
        self.handle.seek(self.position.offset)
        return b"\n" in self.handle.read(CHUNK_BYTES)

    # -- reading, mapping, sending --

    def _save(self) -> None:
        if self.position is not None:
            save_state(self.state_path, self.mapper.partner, self.position, self.mapper.calls)

    def _report_unmapped(self, unmapped: Unmapped) -> None:
        self.say(f"cannot map {unmapped}")

    def _send(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        report = self.send(events)
        self.refused += len(report.refused)
        for event_id, problems in report.refused.items():
            self.say(f"intake refused {event_id}: {', '.join(p.get('path', '') for p in problems)}")
        self.say(f"sent {len(events)} events: {report.summary()}")

    def drain(self) -> tuple[int, bool]:
        """Send every whole line appended since the position: (lines read, stopped at an unmapped line)."""
        assert self.handle is not None and self.position is not None
        total = 0
        while True:
            self.handle.seek(self.position.offset)
            data = self.handle.read(CHUNK_BYTES)
            end = data.rfind(b"\n") + 1
            if end == 0:
                return total, False
            events: list[dict[str, Any]] = []
            offset, line = self.position.offset, self.position.line
            newest = 0.0
            for raw in data[:end].splitlines(keepends=True):
                line += 1
                parsed = parse_line(raw.decode("utf-8", "replace"), line, self.reading.name)
                unmapped = parsed if isinstance(parsed, Unmapped) else None
                if isinstance(parsed, Line):
                    mapped = self.mapper.map(parsed, self.reading.name)
                    unmapped = mapped.unmapped
                    if unmapped is None:
                        events.extend(mapped.events)
                        newest = max(newest, float(parsed.epoch))
                if unmapped is not None:
                    self._report_unmapped(unmapped)
                    if not self.skip_unmappable:
                        self._send(events)
                        self.position.offset, self.position.line = offset, line - 1
                        self._save()
                        return total, True
                offset += len(raw)
                total += 1
            self._send(events)
            if newest:
                self.mapper.forget_old(newest)
            self.position.offset, self.position.line = offset, line
            self._save()

    def run(self, *, poll: float = 1.0, idle_exit: float = 0.0, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> int:
        """Follow until stopped (or, with ``idle_exit``, until nothing new came for that many seconds);
        1 when it stopped at a line it cannot map (fix the config and start again: it resumes there)."""
        self.resume()
        quiet_since = clock()
        try:
            while True:
                if self.handle is None:
                    self._switched()
                else:
                    read, stopped = self.drain()
                    if stopped:
                        self.say("stopped before that line: fix the mapping config and start again (it resumes "
                                 "there), or give --skip-unmappable")
                        return 1
                    if read:
                        quiet_since = clock()
                        continue
                    if self._switched():
                        continue
                if idle_exit and clock() - quiet_since >= idle_exit:
                    return 1 if self.refused else 0
                sleep(poll)
        finally:
            if self.handle is not None:
                self.handle.close()

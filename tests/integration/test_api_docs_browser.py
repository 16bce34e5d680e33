"""/docs and /redoc of a running service, rendered by real headless Chromium on a network with no way out.

The browser sends everything that is not for this host to a trap: a local proxy that records what
was asked for and refuses it. So the pages can only render from what the service itself serves, and
the trap shows whether they even tried to load anything from elsewhere (a CDN, Google Fonts, a
validator). The browser's own background calls to its vendor (updates, sign-in, clock) are no
page's doing and are set apart by name.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What Chromium asks of Google by itself whatever page it shows, even with background networking off.
BROWSER_OWN = frozenset({"update.googleapis.com", "accounts.google.com", "clients2.google.com",
                         "redirector.gvt1.com", "content-autofill.googleapis.com"})
REQUEST_LINE = re.compile(rb"^[A-Z]+ (?:[a-z]+://)?([^/:\s]+)")


@dataclass
class Trap:
    """A proxy that refuses every request and remembers the host of each."""

    hosts: list[str] = field(default_factory=list)
    port: int = 0

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if (match := REQUEST_LINE.match(line)) is not None:
            self.hosts.append(match.group(1).decode())
        writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    def from_pages(self) -> set[str]:
        return set(self.hosts) - BROWSER_OWN


@pytest.fixture
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"headless Chromium is needed for this test and is not at {CHROMIUM}: "
                    "apt-get install -y chromium chromium-driver")
    return CHROMIUM


@pytest.fixture
async def trap() -> AsyncIterator[Trap]:
    trap = Trap()
    server = await asyncio.start_server(trap._refuse, "127.0.0.1", 0)
    trap.port = server.sockets[0].getsockname()[1]
    try:
        yield trap
    finally:
        server.close()
        await server.wait_closed()


async def rendered(chromium: str, url: str, trap: Trap, profile: Path) -> str:
    """The DOM of ``url`` once Chromium has run its scripts (10 s of the page's own time), every
    request not for this host sent to ``trap``."""
    browser = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-default-apps", "--no-pings",
        "--disable-features=NetworkTimeServiceQuerying,AutofillServerCommunication,OptimizationHints,Translate",
        f"--user-data-dir={profile}",
        # every host but this one through the trap (loopback never goes through a proxy)
        f"--proxy-server=http://127.0.0.1:{trap.port}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # and no name resolves, should one go direct
        "--virtual-time-budget=10000", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(browser.communicate(), timeout=180)
    assert browser.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def opblocks(dom: str) -> dict[str, str]:
    """Swagger UI's operations, by path: the markup of each."""
    blocks = dom.split('<div class="opblock opblock-')[1:]
    return {m.group(1): block for block in blocks if (m := re.search(r'data-path="([^"]+)"', block))}


async def test_swagger_ui_shows_the_operations_and_the_authorize_button_from_this_host_alone(
        intake, chromium, trap, tmp_path):
    dom = await rendered(chromium, f"{intake.url}/docs", trap, tmp_path / "profile")
    assert "tsunagu intake" in dom
    assert '<button class="btn authorize' in dom and ">Authorize<" in dom
    operations = opblocks(dom)
    assert set(operations) == {"/v1/events", "/health/live", "/health/ready"}
    # the padlock: on the operation that needs a key, not on the probes
    assert "authorization__btn" in operations["/v1/events"]
    assert "authorization__btn" not in operations["/health/live"] + operations["/health/ready"]
    assert trap.from_pages() == set(), f"the page asked other hosts: {sorted(trap.from_pages())}"


async def test_redoc_shows_the_api_and_its_operations_from_this_host_alone(intake, chromium, trap, tmp_path):
    dom = await rendered(chromium, f"{intake.url}/redoc", trap, tmp_path / "profile")
    assert "tsunagu intake" in dom
    assert "Publish events (one CloudEvent, or a batch)" in dom
    assert "/v1/events" in dom
    assert "Authorizations:" in dom and "<i>bearer</i>" in dom
    # ReDoc's bundle asks for its maker's logo from a CDN: the page's policy stops it in the browser
    assert trap.from_pages() == set(), f"the page asked other hosts: {sorted(trap.from_pages())}"


async def test_the_trap_sees_a_page_that_loads_from_a_cdn(chromium, trap, tmp_path):
    page = 'data:text/html,<script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"></script>'
    await rendered(chromium, page, trap, tmp_path / "profile")
    assert "cdn.jsdelivr.net" in trap.from_pages()

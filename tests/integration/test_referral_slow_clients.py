"""A service process (here referral, run by ``python -m services.referral``) does not hold connections
that never finish their request: a partial request line, partial headers, a partial body or nothing
at all is closed after ``TSUNAGU_HTTP_REQUEST_READ_SECONDS``; connections beyond
``TSUNAGU_HTTP_MAX_CONNECTIONS`` are closed at once. The tests only assert "closed before N seconds"
with N far above the configured timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.referral_support import prepare, referral_env
from tests.support import ServiceProcess
from tsunagu.settings import Settings

pytestmark = pytest.mark.integration

READ_SECONDS = 1
MAX_CONNECTIONS = 6
CLOSED_BEFORE = 30.0  # far above READ_SECONDS: a busy machine may be slow, never this slow


@pytest.fixture
async def guarded(settings: Settings, create_all_topics, tmp_path) -> AsyncIterator[ServiceProcess]:
    await prepare(settings, create_all_topics)
    env = {**referral_env(settings), "TSUNAGU_HTTP_REQUEST_READ_SECONDS": str(READ_SECONDS),
           "TSUNAGU_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    process = ServiceProcess("referral", env, settings.referral_port, tmp_path / "referral.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def held(port: int, sent: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if sent:
        writer.write(sent)
        await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (fails after CLOSED_BEFORE seconds)."""
    return await asyncio.wait_for(reader.read(), timeout=CLOSED_BEFORE)


SLOW = {
    "nothing": b"",
    "part of the request line": b"GE",
    "the request line": b"GET /health/live HTTP/1.1\r\n",
    "part of the headers": b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
    "blank lines only": b"\r\n\r\n",
}


async def test_a_connection_that_never_finishes_its_request_is_closed(guarded):
    connections = {name: await held(guarded.port, sent) for name, sent in SLOW.items()}
    try:
        answers = {name: await until_closed(reader) for name, (reader, _) in connections.items()}
    finally:
        for _, writer in connections.values():
            writer.close()
    for name, answer in answers.items():
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), (name, answer[:200])
    assert answers["part of the headers"].startswith(b"HTTP/1.1 408 ")

    # a body that never comes: the headers were read, the request is dropped at the deadline
    reader, writer = await held(guarded.port, b"POST /v1/referrals/ref-1/acknowledge HTTP/1.1\r\n"
                                              b"Host: localhost\r\nContent-Type: application/json\r\n"
                                              b"Content-Length: 100\r\n\r\n{\"reason\":")
    try:
        await until_closed(reader)
    finally:
        writer.close()

    # after a complete answer, a kept-alive connection that starts another request and stalls is closed too
    reader, writer = await held(guarded.port, b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
    try:
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=CLOSED_BEFORE)
        assert first.startswith(b"HTTP/1.1 200 ")
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: loc")
        await writer.drain()
        await until_closed(reader)
    finally:
        writer.close()

    async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as client:  # and it serves as before
        assert (await client.get("/health/live")).status_code == 200


async def test_connections_beyond_the_cap_are_closed_at_once(guarded):
    stalled = [await held(guarded.port, b"GET /health/live HTTP/1.1\r\nHost: loc") for _ in range(MAX_CONNECTIONS)]
    try:
        # the cap is reached: one more is closed at once, without an answer (no 408: it was never read)
        reader, writer = await held(guarded.port, b"")
        try:
            assert await until_closed(reader) == b""
        finally:
            writer.close()
        # the stalled ones are closed at the read deadline, with a 408
        for reader, _ in stalled:
            assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
    finally:
        for _, writer in stalled:
            writer.close()
    async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as client:
        assert (await client.get("/health/live")).status_code == 200

"""The kit's health pieces (pure): a consumer's progress, causes safe to log, version names."""

from __future__ import annotations

import asyncpg
import pytest

from tsunagu.db import REQUIRED_SERVER_VERSION_NUM, REQUIRED_VERSION_ENV, required_server_version_num, version_name
from tsunagu.health import FAILURES_NOT_READY, ConsumerHealth, describe_error


def test_a_consumer_is_not_ready_after_failures_in_a_row_and_ready_again_after_a_success():
    health = ConsumerHealth()
    assert health.verdict().ok and health.backoff() == 0
    health.failed(asyncpg.exceptions.UndefinedTableError('relation "metrics.inbox" does not exist'))
    assert FAILURES_NOT_READY == 2 and health.verdict().ok  # one failure may be a one-off
    health.failed(asyncpg.exceptions.UndefinedTableError('relation "metrics.inbox" does not exist'))
    verdict = health.verdict()
    assert not verdict.ok
    assert verdict.reason == ('2 batches failed in a row; last: UndefinedTableError: '
                              'relation "metrics.inbox" does not exist')
    backoffs = [health.backoff()]
    for _ in range(6):
        health.failed(OSError("connection refused"))
        backoffs.append(health.backoff())
    assert backoffs == sorted(backoffs) and backoffs[-1] == 2.0
    health.succeeded()
    assert health.verdict().ok and health.failures == 0 and health.backoff() == 0


@pytest.mark.parametrize(("err", "said"), [
    (asyncpg.exceptions.DataError("invalid input for query argument $3: datetime.datetime(1, 1, 1, 0, 0, "
                                  "tzinfo=datetime.timezone.utc) (date value out of range)"),
     "DataError: invalid input for query argument $3 (date value out of range)"),
    (asyncpg.exceptions.UndefinedTableError('missing FROM-clause entry for table "new"'),
     'UndefinedTableError: missing FROM-clause entry for table "new"'),
    (ValueError("caller '090-1234-5678' or \"09012345678\" or 09012345678"), "ValueError: caller '…' or '…' or …"),
    (OverflowError("date value out of range"), "OverflowError: date value out of range"),
    (RuntimeError(), "RuntimeError"),
])
def test_a_cause_is_its_class_and_message_never_a_value(err, said):
    assert describe_error(err) == said


def test_version_names_and_the_requirement_that_can_only_be_raised(monkeypatch):
    assert [version_name(n) for n in (180000, 150004, 180001, 90624)] == ["18", "15.4", "18.1", "9.6.24"]
    monkeypatch.setenv(REQUIRED_VERSION_ENV, "150000")
    assert required_server_version_num() == REQUIRED_SERVER_VERSION_NUM == 180000
    monkeypatch.setenv(REQUIRED_VERSION_ENV, "990000")
    assert required_server_version_num() == 990000

"""Every service's OpenAPI document, fuzzed by schemathesis against the running service.

For each operation, valid and invalid requests generated from the document itself, sent with the
key of each role the operation serves (so that they reach the handler, not just the key check):
no answer is a 5xx, and every answer's status is one the document declares for that operation.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.security.conftest import size

# The roles each service's API is for: the handlers answer these with data, the others with 403.
SERVED = [
    ("intake", "partner"),
    ("routing", "partner"),
    ("routing", "secretariat"),
    ("referral", "receiver"),
    ("referral", "secretariat"),
    ("metrics", "partner"),
    ("metrics", "secretariat"),
]
EXAMPLES = size(ci=25, full=500)  # per operation, role and generation mode


def fuzz_operation(operation, base_url: str, headers: dict[str, str]) -> None:
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=strategy)
    def check(case) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, timeout=30,
                               checks=[not_a_server_error, status_code_conformance])

    check()


@pytest.mark.parametrize(("service", "role"), SERVED, ids=[f"{s}-as-{r}" for s, r in SERVED])
def test_no_request_gets_a_server_error_or_an_undocumented_status(secure_stack, service, role):
    base_url = secure_stack.url(service)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            fuzz_operation(operation, base_url, secure_stack.headers(role))
        except Exception as err:  # collect every operation's first failure, not only the first one
            failures.append(f"{operation.label}: {err}")
    assert operations > 0
    assert not failures, "\n\n".join(failures)

"""Every service's OpenAPI document says how to authenticate, and says it where the code asks for a key.

Each service's app is built as its process builds it (its ``create_app``), without a server, a broker
or a database: the document is generated from its routes, and requests without a key go through the
app in memory (no lifespan: a request without a key is refused before anything needs the pool).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI, Request
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from services.intake.app import SPEC as INTAKE
from services.intake.app import create_app as intake_app
from services.metrics.app import SPEC as METRICS
from services.metrics.app import create_app as metrics_app
from services.referral.app import SPEC as REFERRAL
from services.referral.app import create_app as referral_app
from services.routing.app import SPEC as ROUTING
from services.routing.app import create_app as routing_app
from tests.fakes import fake_settings
from tsunagu import api_docs
from tsunagu.http_auth import KEY_REQUIRED, PUBLIC, SECURITY_SCHEMES, api_key_of, with_security
from tsunagu.service import ServiceSpec

FACTORIES: dict[str, tuple[ServiceSpec, Callable[[Any], FastAPI]]] = {
    "intake": (INTAKE, intake_app),
    "routing": (ROUTING, routing_app),
    "referral": (REFERRAL, referral_app),
    "metrics": (METRICS, metrics_app),
}
METHODS = {"get", "put", "post", "delete", "patch"}
# What each service serves without a key: its probes, and metrics' Prometheus scrape (open on the
# cluster network only). Everything else in its document needs one.
PUBLIC_OPERATIONS = {
    "intake": {("get", "/health/live"), ("get", "/health/ready")},
    "routing": {("get", "/health/live"), ("get", "/health/ready")},
    "referral": {("get", "/health/live"), ("get", "/health/ready")},
    "metrics": {("get", "/health/live"), ("get", "/health/ready"), ("get", "/metrics")},
}


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def service(request: pytest.FixtureRequest) -> tuple[str, FastAPI]:
    spec, create_app = FACTORIES[request.param]
    # a database and a broker that are never dialled: no lifespan runs here
    settings = fake_settings(spec.settings, DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    return request.param, create_app(settings)


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, item in document["paths"].items()
            for method, operation in item.items() if method in METHODS]


def requires_key(operation: dict[str, Any]) -> bool:
    """Whether the document asks for a key (``security: []`` says: none)."""
    return bool(operation.get("security"))


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service.test")


def test_every_operation_that_needs_a_key_declares_both_ways_of_sending_it_and_the_others_none(service):
    name, app = service
    document = app.openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes == SECURITY_SCHEMES
    public = {(m, p) for m, p, op in operations(document) if not requires_key(op)}
    assert public == PUBLIC_OPERATIONS[name]
    protected = [(m, p, op) for m, p, op in operations(document) if requires_key(op)]
    assert protected, f"{name} documents no operation behind a key"
    for method, path, operation in protected:
        assert path.startswith("/v1/"), (method, path)
        assert operation["security"] == KEY_REQUIRED, (method, path)
        assert all(scheme in schemes for requirement in operation["security"] for scheme in requirement)
        assert "401" in operation["responses"], f"{method} {path} does not document its 401"


async def test_the_document_agrees_with_the_code_on_which_requests_need_a_key(service):
    name, app = service
    async with client(app) as http:
        for method, path, operation in operations(app.openapi()):
            url = re.sub(r"\{[^}]+\}", "ref-1", path)
            response = await http.request(method.upper(), url)
            if requires_key(operation):
                assert response.status_code == 401, (name, method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
            else:
                assert response.status_code != 401, (name, method, path)


def test_every_document_is_valid_openapi(service):
    _, app = service
    document = app.openapi()
    assert document["openapi"].startswith("3.1")
    OPENAPI_31_VALIDATOR.validate(document)


def test_the_validator_refuses_a_scheme_that_is_not_openapi(service):
    _, app = service
    document = app.openapi()
    broken = {k: v for k, v in SECURITY_SCHEMES["bearer"].items() if k != "scheme"}  # http needs its scheme
    with pytest.raises(jsonschema_rs.ValidationError):
        OPENAPI_31_VALIDATOR.validate({**document, "components": {
            **document["components"], "securitySchemes": {**SECURITY_SCHEMES, "bearer": broken}}})


def test_both_declared_schemes_are_headers_the_code_reads_a_key_from():
    def request(headers: dict[str, str]) -> Request:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})

    bearer, header = SECURITY_SCHEMES["bearer"], SECURITY_SCHEMES["apiKeyHeader"]
    assert (bearer["type"], bearer["scheme"], header["type"], header["in"]) == ("http", "bearer", "apiKey", "header")
    assert bearer["bearerFormat"]
    assert api_key_of(request({"Authorization": "Bearer k-1"})) == "k-1"
    assert api_key_of(request({header["name"]: "k-2"})) == "k-2"
    assert api_key_of(request({})) is None


def test_a_route_under_v1_marked_public_declares_no_key_and_one_outside_v1_needs_none():
    app = FastAPI(docs_url=None, redoc_url=None)
    api_docs.install(app)

    @app.get("/v1/closed")
    async def closed() -> dict[str, str]:
        return {}

    @app.get("/v1/open", openapi_extra=PUBLIC)
    async def open_() -> dict[str, str]:
        return {}

    @app.get("/status")
    async def status() -> dict[str, str]:
        return {}

    paths = app.openapi()["paths"]
    assert paths["/v1/closed"]["get"]["security"] == KEY_REQUIRED
    assert paths["/v1/open"]["get"]["security"] == []
    assert "security" not in paths["/status"]["get"]


def test_declaring_the_schemes_keeps_the_rest_of_the_document():
    document = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
                "components": {"schemas": {"A": {"type": "object"}}},
                "paths": {"/v1/a": {"parameters": [], "get": {"responses": {}}}}}
    declared = with_security(document)
    assert declared["components"]["schemas"] == {"A": {"type": "object"}}
    assert declared["paths"]["/v1/a"]["parameters"] == []
    assert declared["paths"]["/v1/a"]["get"] == {"responses": {}, "security": KEY_REQUIRED}
    assert "security" not in document["paths"]["/v1/a"]["get"]  # the original is not changed


URLS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


async def test_the_docs_pages_name_only_files_of_this_host_and_serve_them_without_a_key(service):
    _, app = service
    async with client(app) as http:
        for page in ("/docs", "/redoc"):
            response = await http.get(page)
            assert response.status_code == 200, page
            policy = response.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "img-src 'self' data:" in policy
            urls = [a or b for a, b in URLS.findall(response.text)]
            assert urls, page
            for url in urls:
                assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url}"
                assert (await http.get(url)).status_code == 200, f"{page}: {url} is not served"
            assert "googleapis" not in response.text and "cdn." not in response.text

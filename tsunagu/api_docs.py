"""Every service's API documents: ``/openapi.json`` with the key's security schemes, and ``/docs``
(Swagger UI) and ``/redoc`` (ReDoc) served from this host alone.

FastAPI's own pages load their JavaScript and CSS from a CDN (and ReDoc's Google Fonts), so they are
blank on a network without one — a partner's closed network, a municipality's office. Here the pages
load the files the ``fastapi-offline`` package ships, from ``/docs/assets``, and carry a
Content-Security-Policy that lets the browser fetch nothing from anywhere else: ReDoc's bundle still
asks for the Redocly logo from its CDN, and Swagger UI would send the document to an online
validator (``validatorUrl``, off here) — neither request leaves the browser.

    app = FastAPI(..., docs_url=None, redoc_url=None)
    install(app)     # tsunagu.service.service_app does this for every service
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from tsunagu.http_auth import with_security

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
# Swagger UI 5 and ReDoc 2 as fastapi-offline ships them: swagger-ui-bundle.js, swagger-ui.css,
# redoc.standalone.js, favicon.png.
ASSETS = Path(str(files("fastapi_offline") / "static"))

# Only this host: scripts and styles are the assets plus the pages' own inline ones (FastAPI's page
# starts Swagger UI inline, both UIs style inline); ReDoc searches in a worker it makes from a blob.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self' 'unsafe-inline'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "validatorUrl": None,  # no badge: it would send the document to validator.swagger.io
    "persistAuthorization": False,  # a key typed into Authorize is not kept in the browser's storage
    "displayRequestDuration": True,
}


def documented(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with the security schemes (tsunagu.http_auth.with_security). It reads the
    app's routes when first asked, so it sees the routes a service adds after the kit built the app."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = with_security(generate())
        return app.openapi_schema

    return openapi


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def swagger_ui(app: FastAPI, root: str) -> HTMLResponse:
    """The Swagger UI page of ``app``'s document (``root``: the ASGI root path behind a proxy)."""
    return _page(get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} — API (Swagger UI)",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        oauth2_redirect_url=None,  # keys, not OAuth 2
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    ))


def redoc(app: FastAPI, root: str) -> HTMLResponse:
    """The ReDoc page of ``app``'s document."""
    return _page(get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} — API (ReDoc)",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    ))


def install(app: FastAPI) -> None:
    """Give ``app`` (built with ``docs_url=None, redoc_url=None``) its documented ``/openapi.json``,
    ``/docs``, ``/redoc`` and their assets. None of them needs a key."""
    if app.docs_url or app.redoc_url:
        raise ValueError("build the app with docs_url=None, redoc_url=None: FastAPI's pages load from a CDN")
    app.openapi = documented(app)  # type: ignore[method-assign]
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="api-docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        return swagger_ui(app, request.scope.get("root_path", ""))

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc_page(request: Request) -> HTMLResponse:
        return redoc(app, request.scope.get("root_path", ""))

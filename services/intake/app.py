"""Placeholder while intake is written: health only."""
from fastapi import FastAPI

from tsunagu.health import health_router
from tsunagu.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="tsunagu intake")

    async def ok() -> bool:
        return True

    app.include_router(health_router("intake", {"self": ok}))
    return app

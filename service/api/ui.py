"""`GET /`: a one-page UI over the public API, plain files served as they are (no build step).

The page and its assets stay open when API keys are on (they hold nothing private: the page
asks for a key and sends it with its API calls), so `PUBLIC_PATHS` joins the open paths.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Response

STATIC_PACKAGE = "service.api.static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
PUBLIC_PATHS = frozenset({"/", *(f"/ui/{name}" for name in ASSETS)})
# The page's own scripts and styles only; images are the user's own, as blobs and data URLs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; "
                           "media-src 'self' blob: mediastream:; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": CONTENT_SECURITY_POLICY}


@cache
def static_file(name: str) -> bytes:
    return resources.files(STATIC_PACKAGE).joinpath(name).read_bytes()


def ui_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> Response:
        return Response(static_file("index.html"), media_type="text/html; charset=utf-8",
                        headers=HEADERS)

    def asset_route(name: str, media_type: str) -> None:
        async def asset() -> Response:
            return Response(static_file(name), media_type=media_type, headers=HEADERS)

        router.add_api_route(f"/ui/{name}", asset, methods=["GET"], name=f"ui_{name}")

    for name, media_type in ASSETS.items():
        asset_route(name, media_type)
    return router

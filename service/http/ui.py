"""`GET /`: a one-page UI over the public API, plain files served as they are (no build step);
and `GET /docs` and `/redoc`, with their scripts served from here too, so that they work on a
machine without internet.

The page and its assets stay open when API keys are on (they hold nothing private: the page
asks for a key and sends it with its API calls), so `PUBLIC_PATHS` joins the open paths.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

STATIC_PACKAGE = "service.http.static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
# Browsers ask for /favicon.ico whatever a page links: the same icon, as SVG.
FAVICON_PATH = "/favicon.ico"
# Swagger UI's and ReDoc's bundles, as the fastapi-offline package ships them (MIT).
DOCS_PACKAGE = "fastapi_offline.static"
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
               "swagger-ui.css": "text/css; charset=utf-8",
               "redoc.standalone.js": "text/javascript; charset=utf-8"}
PUBLIC_PATHS = frozenset({"/", FAVICON_PATH, *(f"/ui/{name}" for name in ASSETS),
                          *(f"/docs/assets/{name}" for name in DOCS_ASSETS)})
NO_FAVICON = "data:,"  # FastAPI's default favicon is on its website
# The page's own scripts and styles only; images are the user's own, as blobs and data URLs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; "
                           "media-src 'self' blob: mediastream:; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": CONTENT_SECURITY_POLICY}


@cache
def static_file(name: str, package: str = STATIC_PACKAGE) -> bytes:
    return resources.files(package).joinpath(name).read_bytes()


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

    @router.get(FAVICON_PATH)
    async def favicon() -> Response:
        return Response(static_file("favicon.svg"), media_type=ASSETS["favicon.svg"],
                        headers={"Cache-Control": "max-age=86400",
                                 "X-Content-Type-Options": "nosniff"})

    return router


def docs_router(openapi_url: str, title: str) -> APIRouter:
    """The API's interactive documentation; the app is made with docs_url=None and
    redoc_url=None so that these replace FastAPI's, which load their scripts from a CDN."""
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def swagger() -> Response:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url=NO_FAVICON)

    @router.get("/redoc")
    async def redoc() -> Response:
        return get_redoc_html(openapi_url=openapi_url, title=f"{title} - API",
                              redoc_js_url="/docs/assets/redoc.standalone.js",
                              redoc_favicon_url=NO_FAVICON, with_google_fonts=False)

    def asset_route(name: str, media_type: str) -> None:
        async def asset() -> Response:
            return Response(static_file(name, DOCS_PACKAGE), media_type=media_type,
                            headers={"Cache-Control": "max-age=86400",
                                     "X-Content-Type-Options": "nosniff"})

        router.add_api_route(f"/docs/assets/{name}", asset, methods=["GET"],
                             name=f"docs_{name}")

    for name, media_type in DOCS_ASSETS.items():
        asset_route(name, media_type)
    return router

"""``/asyncapi`` and ``/asyncapi.json`` on the ingest API: the Kafka channels' document.

The API is where operators already find ``/docs``; the AsyncAPI page sits next to it and, like
it, loads nothing from another host (see :mod:`hub.docs.page`).
"""

import asyncio
from typing import Any, Final

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse

from connectors.rest_api.problems import ProblemError
from hub.docs.page import ASSET_MEDIA_TYPES, REACT_COMPONENT_VERSION, asset, asyncapi_html
from hub.logging import get_logger
from hub.routing.routes import RoutesError
from hub.settings import HubSettings

log = get_logger(__name__)

ASYNCAPI_PAGE_PATH: Final = "/asyncapi"
ASYNCAPI_JSON_PATH: Final = "/asyncapi.json"
ASYNCAPI_ASSETS_PATH: Final = "/asyncapi-assets"


def add_asyncapi_routes(app: FastAPI, settings: HubSettings) -> set[str]:
    """Add the page, the document and the page's assets; return the paths (for metrics)."""
    cached: dict[str, Any] = {}
    lock = asyncio.Lock()

    async def document() -> JSONResponse:
        """The AsyncAPI 3.0 document, generated once (about half a second) on first request."""
        async with lock:
            if "document" not in cached:
                # Imported here: FastStream and the routing code load only when someone asks
                # for the document, not at every start of the API.
                from hub.docs.asyncapi import asyncapi_document

                try:
                    cached["document"] = await asyncio.to_thread(asyncapi_document, settings)
                except RoutesError as error:
                    log.error("asyncapi.routes_invalid", error=str(error))
                    raise ProblemError(
                        "not-ready", "the routes file is not valid: see hub routes check"
                    ) from None
        return JSONResponse(cached["document"])

    async def page() -> HTMLResponse:
        # Relative addresses: the page also works behind a proxy that adds a path prefix.
        return HTMLResponse(
            asyncapi_html(
                "TE integration hub: Kafka channels (AsyncAPI)",
                document_url=ASYNCAPI_JSON_PATH.lstrip("/"),
                assets_url=ASYNCAPI_ASSETS_PATH.lstrip("/") + f"/{REACT_COMPONENT_VERSION}",
            )
        )

    async def asset_file(name: str) -> Response:
        if name not in ASSET_MEDIA_TYPES:
            return Response(status_code=404)
        content, media_type = asset(name)
        # The version is in the path, so the file under it never changes.
        return Response(
            content,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    app.add_api_route(ASYNCAPI_JSON_PATH, document, methods=["GET"], include_in_schema=False)
    app.add_api_route(ASYNCAPI_PAGE_PATH, page, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        f"{ASYNCAPI_ASSETS_PATH}/{REACT_COMPONENT_VERSION}/{{name}}",
        asset_file,
        methods=["GET"],
        include_in_schema=False,
    )
    return {ASYNCAPI_PAGE_PATH, ASYNCAPI_JSON_PATH}

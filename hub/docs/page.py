"""The AsyncAPI page: the document rendered by the AsyncAPI React component, with no CDN.

FastStream's ``get_asyncapi_html`` loads the component from unpkg.com and its icons from
asyncapi.com, so on an intranet (or offline) the page stays blank. This page is the same
component (its standalone browser bundle, vendored in ``static/`` with its licence and source
note) served by the hub itself, with the same configuration FastStream uses.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Final

REACT_COMPONENT_VERSION: Final = "3.2.1"
ASSETS_DIR: Final = Path(__file__).parent / "static" / "asyncapi-react-component"
#: The files the page loads, with their media types.
ASSET_MEDIA_TYPES: Final = {
    "standalone.js": "text/javascript; charset=utf-8",
    "default.min.css": "text/css; charset=utf-8",
}

_CONFIG: Final = {
    "show": {
        "sidebar": True,
        "info": True,
        "servers": True,
        "operations": True,
        "messages": True,
        "schemas": True,
        "errors": True,
    },
    "expand": {"messageExamples": False},
    "sidebar": {"showServers": "byDefault", "showOperations": "byDefault"},
}


def asyncapi_html(title: str, document_url: str, assets_url: str) -> str:
    """The page; *document_url* and *assets_url* are relative to the page or absolute paths.

    The component fetches the document itself (same origin), so the page stays small and the
    document has one address.
    """
    assets = assets_url.rstrip("/")
    settings = {"schema": {"url": document_url, "options": {"method": "GET"}}, "config": _CONFIG}
    # json.dumps output is safe inside a <script> once "</" cannot close it.
    render = json.dumps(settings).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{html.escape(assets)}/default.min.css">
<style>
html {{ font-family: ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       line-height: 1.5; }}
</style>
</head>
<body>
<div id="asyncapi"></div>
<noscript>The page needs JavaScript; the document itself is
<a href="{html.escape(document_url)}">{html.escape(document_url)}</a>.</noscript>
<script src="{html.escape(assets)}/standalone.js"></script>
<script>
window.AsyncApiStandalone.render({render}, document.getElementById("asyncapi"));
</script>
</body>
</html>
"""


def asset(name: str) -> tuple[bytes, str]:
    """(content, media type) of one of the page's assets; KeyError for any other name."""
    media_type = ASSET_MEDIA_TYPES[name]
    return (ASSETS_DIR / name).read_bytes(), media_type

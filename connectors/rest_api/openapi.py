"""The ingest API's OpenAPI document: typed bodies, examples and problem responses."""

from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from connectors.rest_api.endpoints import BULK_PATH, ENDPOINTS, NDJSON
from connectors.rest_api.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPES,
    Problem,
)
from hub.intake.requests import (
    BULK_ADAPTER,
    REQUEST_TYPES,
)

# --- OpenAPI ----------------------------------------------------------------------------------


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    headers = {
        401: {
            "WWW-Authenticate": {"description": "Bearer challenge.", "schema": {"type": "string"}}
        },
        403: {
            "WWW-Authenticate": {
                "description": "insufficient_scope with the missing scope.",
                "schema": {"type": "string"},
            }
        },
        415: {
            "Accept-Post": {
                "description": "Media types this path accepts.",
                "schema": {"type": "string"},
            }
        },
        503: {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    }
    return {
        status: {
            "model": Problem,
            "description": _status_description(status),
            **({"headers": headers[status]} if status in headers else {}),
        }
        for status in statuses
    }


def _status_description(status: int) -> str:
    slugs = [slug for slug, (code, _) in PROBLEM_TYPES.items() if code == status]
    return "Problem: " + ", ".join(slugs)


ACCEPTED_HEADERS: Final = {
    "Idempotent-Replayed": {
        "description": "true when the key had been used for this request before: the "
        "original answer, nothing new written.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "X-Request-ID": {
        "description": "Id of this request in the hub's logs.",
        "schema": {"type": "string"},
    },
}
POST_PROBLEMS: Final = (400, 401, 403, 408, 409, 413, 415, 422, 503)


REF_TEMPLATE: Final = "#/components/schemas/{model}"


def openapi_builder(app: FastAPI, max_items: int) -> Callable[[], dict[str, Any]]:
    """FastAPI's document plus the bulk body and problem media types."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        _, singles = models_json_schema(
            [(model, "validation") for model in REQUEST_TYPES.values()],
            ref_template=REF_TEMPLATE,
        )
        array = BULK_ADAPTER.json_schema(ref_template=REF_TEMPLATE)
        for name, definition in {**singles["$defs"], **array.pop("$defs", {})}.items():
            components.setdefault(name, definition)
        array.update(minItems=1, maxItems=max_items)
        for endpoint in ENDPOINTS:
            schema["paths"][endpoint.path]["post"]["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "$ref": REF_TEMPLATE.format(model=f"{endpoint.event_type}Request")
                        }
                    }
                },
            }
        schema["paths"][BULK_PATH]["post"]["requestBody"] = {
            "required": True,
            "description": f"Up to {max_items} items, each a request with its event_type. As "
            "application/json: an array. As application/x-ndjson: one item per line (errors "
            "name the line).",
            "content": {"application/json": {"schema": array}, NDJSON: {"schema": array}},
        }
        for path_item in schema["paths"].values():
            for operation in path_item.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status.isdigit() and int(status) >= 400 and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    return build

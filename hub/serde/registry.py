"""A small client of the Confluent Schema Registry REST API (Confluent, Karapace, Apicurio...).

Only what the hub needs: register schemas on deploy, look ids up for producers, fetch writer
schemas by id for consumers, check compatibility. Sync methods serve the deploy command and
producer start-up; the ``a``-prefixed async methods serve consumers inside an event loop.
Both directions are cached for the life of the client: a registered schema never changes its id.

Subject naming is the **RecordNameStrategy**: subject = full record name (``fi.te.hub.
JobseekerRegistered``). The customer-path topic carries many event types in one ordered
partition per person, so the default TopicNameStrategy (one subject ``<topic>-value`` and thus
one evolving schema per topic) would force every type into a single union schema; with one
subject per record, each type evolves and is compatibility-checked on its own, and the same
schema keeps one id on every topic it is copied to (outboxes, dead letters).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

from hub.http_errors import HTTP_FAILURES, tls_problem
from hub.serde.base import AvroSchemaJson, SerdeError
from hub.serde.catalog import SchemaCatalog

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPT = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; qs=0.9, "
    "application/json; qs=0.5"
)

# Error codes of the Confluent API that callers branch on.
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INCOMPATIBLE_SCHEMA = 409
INVALID_SCHEMA = 42201


class SchemaRegistryError(SerdeError):
    """The registry refused a request or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: int | None = None,
        url: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.url = url
        detail = f"HTTP {status_code}" if status_code is not None else "no response"
        if error_code is not None:
            detail += f", error_code {error_code}"
        super().__init__(f"schema registry: {message} ({detail}{f', {url}' if url else ''})")


class SubjectNotFound(SchemaRegistryError):
    """40401: the subject has no versions."""


class SchemaNotFound(SchemaRegistryError):
    """40403: no schema with that id, or the schema is not registered under the subject."""


class IncompatibleSchema(SchemaRegistryError):
    """409: the schema breaks the subject's compatibility rule."""


def schema_text(schema: AvroSchemaJson | str) -> str:
    """Schema as compact JSON text; a string that already is JSON text is kept as it is."""
    if isinstance(schema, str):
        stripped = schema.lstrip()
        if stripped.startswith(("{", "[", '"')):
            return schema
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def _error_from(response: httpx.Response) -> SchemaRegistryError:
    error_code: int | None = None
    message = response.reason_phrase or "request failed"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("error_code")
        error_code = code if isinstance(code, int) else None
        message = str(body.get("message") or message)
    cls: type[SchemaRegistryError] = SchemaRegistryError
    if error_code == SUBJECT_NOT_FOUND:
        cls = SubjectNotFound
    elif error_code == SCHEMA_NOT_FOUND:
        cls = SchemaNotFound
    elif response.status_code == 409:
        cls = IncompatibleSchema
    return cls(
        message,
        status_code=response.status_code,
        error_code=error_code,
        url=str(response.request.url),
    )


def _json_of(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise _error_from(response)
    try:
        return response.json()
    except ValueError as exc:
        raise SchemaRegistryError(
            f"response is not JSON: {response.text[:200]!r}",
            status_code=response.status_code,
            url=str(response.request.url),
        ) from exc


def _id_of(body: Any, url: str) -> int:
    if isinstance(body, dict) and isinstance(body.get("id"), int):
        return int(body["id"])
    raise SchemaRegistryError(f"response has no schema id: {str(body)[:200]}", url=url)


def _schema_of(body: Any, url: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("schema"), str):
        schema_type = body.get("schemaType", "AVRO")
        if schema_type != "AVRO":
            raise SchemaRegistryError(f"schema is {schema_type}, not AVRO", url=url)
        return str(body["schema"])
    raise SchemaRegistryError(f"response has no schema: {str(body)[:200]}", url=url)


class SchemaRegistryClient:
    """Confluent-compatible registry client over httpx, with id↔schema caches."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        auth: tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._options: dict[str, Any] = {
            "base_url": self.url,
            "timeout": timeout,
            "auth": auth,
            "headers": {"Content-Type": CONTENT_TYPE, "Accept": ACCEPT},
        }
        self._transport = transport
        self._async_transport = async_transport
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._schemas_by_id: dict[int, str] = {}
        self._ids_by_subject: dict[tuple[str, str], int] = {}

    # -- caches ---------------------------------------------------------------------------

    def cached_schema(self, schema_id: int) -> str | None:
        """Schema text for an id if already fetched or registered (no network)."""
        return self._schemas_by_id.get(schema_id)

    def cached_id(self, subject: str, schema: AvroSchemaJson | str) -> int | None:
        """Id of a schema under a subject if already known (no network)."""
        return self._ids_by_subject.get((subject, schema_text(schema)))

    def _remember(self, subject: str | None, text: str, schema_id: int) -> int:
        self._schemas_by_id.setdefault(schema_id, text)
        if subject is not None:
            self._ids_by_subject[(subject, text)] = schema_id
        return schema_id

    # -- sync -----------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(transport=self._transport, **self._options)
        return self._client

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.client.request(method, path, json=body)
        except HTTP_FAILURES as exc:  # a TLS alert on the first read escapes httpx
            raise SchemaRegistryError(
                f"{method} {path} failed: {tls_problem(exc) or exc}", url=self.url
            ) from exc
        return _json_of(response)

    def register(self, subject: str, schema: AvroSchemaJson | str) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its global id."""
        return self._post_schema(subject, schema, "/versions")

    def lookup(self, subject: str, schema: AvroSchemaJson | str) -> int:
        """Id of ``schema`` under ``subject``; SchemaNotFound / SubjectNotFound if not there."""
        return self._post_schema(subject, schema, "")

    def _post_schema(self, subject: str, schema: AvroSchemaJson | str, suffix: str) -> int:
        text = schema_text(schema)
        cached = self._ids_by_subject.get((subject, text))
        if cached is not None:
            return cached
        path = f"/subjects/{quote(subject, safe='')}{suffix}"
        body = self._request("POST", path, {"schema": text, "schemaType": "AVRO"})
        return self._remember(subject, text, _id_of(body, path))

    def get_by_id(self, schema_id: int) -> str:
        """Schema text registered with ``schema_id`` (SchemaNotFound if none)."""
        cached = self._schemas_by_id.get(schema_id)
        if cached is not None:
            return cached
        path = f"/schemas/ids/{int(schema_id)}"
        body = self._request("GET", path)
        return self._schemas_by_id.setdefault(schema_id, _schema_of(body, path))

    def check_compatibility(self, subject: str, schema: AvroSchemaJson | str) -> bool:
        """Whether ``schema`` may be registered under ``subject`` by the subject's rule.

        A subject without versions accepts anything, so that is True, not an error.
        """
        path = f"/compatibility/subjects/{quote(subject, safe='')}/versions/latest"
        try:
            body = self._request("POST", path, {"schema": schema_text(schema)})
        except (SubjectNotFound, SchemaNotFound):
            return True
        except SchemaRegistryError as exc:
            if exc.error_code == VERSION_NOT_FOUND:
                return True
            raise
        return bool(isinstance(body, dict) and body.get("is_compatible"))

    def subjects(self) -> list[str]:
        body = self._request("GET", "/subjects")
        return [str(s) for s in body] if isinstance(body, list) else []

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SchemaRegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- async ----------------------------------------------------------------------------

    @property
    def async_client(self) -> httpx.AsyncClient:
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(transport=self._async_transport, **self._options)
        return self._async_client

    async def _arequest(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = await self.async_client.request(method, path, json=body)
        except HTTP_FAILURES as exc:  # a TLS alert on the first read escapes httpx
            raise SchemaRegistryError(
                f"{method} {path} failed: {tls_problem(exc) or exc}", url=self.url
            ) from exc
        return _json_of(response)

    async def aregister(self, subject: str, schema: AvroSchemaJson | str) -> int:
        return await self._apost_schema(subject, schema, "/versions")

    async def alookup(self, subject: str, schema: AvroSchemaJson | str) -> int:
        return await self._apost_schema(subject, schema, "")

    async def _apost_schema(self, subject: str, schema: AvroSchemaJson | str, suffix: str) -> int:
        text = schema_text(schema)
        cached = self._ids_by_subject.get((subject, text))
        if cached is not None:
            return cached
        path = f"/subjects/{quote(subject, safe='')}{suffix}"
        body = await self._arequest("POST", path, {"schema": text, "schemaType": "AVRO"})
        return self._remember(subject, text, _id_of(body, path))

    async def aget_by_id(self, schema_id: int) -> str:
        cached = self._schemas_by_id.get(schema_id)
        if cached is not None:
            return cached
        path = f"/schemas/ids/{int(schema_id)}"
        body = await self._arequest("GET", path)
        return self._schemas_by_id.setdefault(schema_id, _schema_of(body, path))

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None


def subject_for(type_name: str) -> str:
    """RecordNameStrategy: the subject of a record is its full name."""
    return type_name


def register_all(
    catalog: SchemaCatalog,
    client: SchemaRegistryClient,
    *,
    include_history: bool = False,
    names: Iterable[str] | None = None,
) -> dict[str, int]:
    """Register the current schema of every event type (deploy step); returns name → id.

    With ``include_history`` the released versions are registered first, oldest first, so a
    fresh registry gets the whole version chain and checks each step's compatibility.
    """
    ids: dict[str, int] = {}
    for name in names if names is not None else catalog.names():
        event = catalog.event(name)
        subject = subject_for(event.full_name)
        if include_history:
            for version in event.history:
                client.register(subject, version.json)
        ids[event.full_name] = client.register(subject, event.current.json)
    return ids

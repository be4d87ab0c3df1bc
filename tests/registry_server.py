"""A small, real HTTP server speaking the part of the Confluent Schema Registry API the hub uses.

No Confluent-compatible registry can be started on the development machines (no Docker;
Karapace is not on PyPI), so the registry client and the Confluent framing are tested against
this server over real HTTP on 127.0.0.1. It follows the documented API: global ids shared by
identical schemas across subjects, idempotent registration, ``error_code`` bodies
(40401 subject not found, 40403 schema not found, 42201 invalid schema, 409 incompatible) and
a BACKWARD compatibility rule on record fields (a new field must have a default).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from fastavro import parse_schema

JSON_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass
class RegistryState:
    """What the server holds; tests read it to see what the client sent."""

    schemas: dict[int, str] = field(default_factory=dict)
    ids_by_identity: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    content_types: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RegistryError(Exception):
    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _identity(text: str) -> str:
    """Schemas are the same when their JSON is (Confluent compares normalised schema text)."""
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def _validated(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise RegistryError(
            422, 42201, "Either the input schema or one of its references is invalid"
        )
    if body.get("schemaType", "AVRO") != "AVRO":
        raise RegistryError(422, 42201, "Only AVRO schemas are supported here")
    try:
        parse_schema(json.loads(body["schema"]), named_schemas={})
    except Exception as exc:
        raise RegistryError(422, 42201, f"Invalid schema: {exc}") from exc
    return str(body["schema"])


def _backward_compatible(new_text: str, old_text: str) -> bool:
    """BACKWARD on record fields, nested records included: the new schema reads old data, so
    every field it adds needs a default. (Type changes are not checked: enough for the tests.)"""
    return _reads(json.loads(new_text), json.loads(old_text))


def _reads(new: Any, old: Any) -> bool:
    if not (isinstance(new, dict) and isinstance(old, dict)) or new.get("type") != "record":
        return True
    old_fields = {f["name"]: f for f in old.get("fields", [])}
    for field_ in new.get("fields", []):
        before = old_fields.get(field_["name"])
        if before is None:
            if "default" not in field_:
                return False
        elif not _reads(field_["type"], before["type"]):
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise RegistryError(400, 400, "Unrecognized JSON body") from exc

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
        with state.lock:
            state.requests[f"{method} /{'/'.join(parts)}"] += 1
            if method == "POST":
                state.content_types.add(self.headers.get("Content-Type", ""))
        try:
            status, body = self._route(method, parts, state)
        except RegistryError as exc:
            status, body = exc.status, {"error_code": exc.error_code, "message": exc.message}
        self._send(status, body)

    def _route(self, method: str, parts: list[str], state: RegistryState) -> tuple[int, Any]:
        match method, parts:
            case "GET", ["subjects"]:
                return 200, sorted(state.subjects)
            case "GET", ["schemas", "ids", raw_id]:
                schema_id = int(raw_id) if raw_id.isdigit() else -1
                if schema_id not in state.schemas:
                    raise RegistryError(404, 40403, f"Schema {raw_id} not found")
                return 200, {"schema": state.schemas[schema_id]}
            case "POST", ["subjects", subject, "versions"]:
                return 200, {"id": self._register(state, subject, _validated(self._body()))}
            case "POST", ["subjects", subject]:
                text = _validated(self._body())
                with state.lock:
                    versions = state.subjects.get(subject)
                    if not versions:
                        raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
                    schema_id = state.ids_by_identity.get(_identity(text))
                    if schema_id not in versions:
                        raise RegistryError(404, 40403, "Schema not found")
                    return 200, {
                        "subject": subject,
                        "id": schema_id,
                        "version": versions.index(schema_id) + 1,
                        "schema": state.schemas[schema_id],
                    }
            case "POST", ["compatibility", "subjects", subject, "versions", "latest"]:
                text = _validated(self._body())
                with state.lock:
                    versions = state.subjects.get(subject)
                    if not versions:
                        raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
                    latest = state.schemas[versions[-1]]
                return 200, {"is_compatible": _backward_compatible(text, latest)}
        raise RegistryError(404, 404, "HTTP 404 Not Found")

    @staticmethod
    def _register(state: RegistryState, subject: str, text: str) -> int:
        identity = _identity(text)
        with state.lock:
            versions = state.subjects.setdefault(subject, [])
            existing = state.ids_by_identity.get(identity)
            if existing is not None and existing in versions:
                return existing
            if versions and not _backward_compatible(text, state.schemas[versions[-1]]):
                raise RegistryError(
                    409, 409, "Schema being registered is incompatible with an earlier schema"
                )
            if existing is None:
                existing = len(state.schemas) + 1
                state.schemas[existing] = text
                state.ids_by_identity[identity] = existing
            versions.append(existing)
            return existing

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: RegistryState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@dataclass
class RunningRegistry:
    url: str
    state: RegistryState


@contextmanager
def running_registry() -> Iterator[RunningRegistry]:
    """Serve a fresh, empty registry on a free port for the duration of the block."""
    state = RegistryState()
    server = _Server(state)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="test-registry", daemon=True
    )
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield RunningRegistry(f"http://{host!s}:{port}", state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

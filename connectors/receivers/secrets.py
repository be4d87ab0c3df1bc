"""Which signing secret a local receiver verifies with: the one the hub signs with.

One function, :func:`receiver_secret`, so that the receivers follow the routing's rule and
nothing else: an endpoint of the routes whose URL path is the receiver's path uses that
endpoint's :meth:`~hub.routing.routes.Endpoint.signing_secret` (a configured secret_env or
secret_file, or the development secret); any other receiver (the server plays every fund code,
business ID and area, known to the routes or not) gets the development secret of the endpoint id
the routes would give it (``kela``, ``funds/<code>``, ``providers/<business id>``,
``municipal/<area>``).
"""

from __future__ import annotations

from typing import Final

from hub.logging import get_logger
from hub.routing.routes import RoutesConfig, development_signing_secret, load_routes
from hub.settings import HubSettings

log = get_logger(__name__)

#: Receiver path kind → destination name of the default routes.
DESTINATION_OF_KIND: Final = {
    "kela": "kela",
    "fund": "funds",
    "provider": "providers",
    "municipal": "municipal",
}


def endpoint_id_of(receiver: str) -> str:
    """The routing endpoint id of a receiver name (``fund/1234`` → ``funds/1234``)."""
    kind, _, key = receiver.partition("/")
    destination = DESTINATION_OF_KIND.get(kind, kind)
    return f"{destination}/{key}" if key else destination


def receiver_secret(settings: HubSettings, receiver: str) -> str:
    """The ``whsec_`` secret receiver *receiver* (``kela``, ``fund/1234``, ...) verifies with."""
    routes = _routes(settings)
    if routes is not None:
        for destination in routes.destinations.values():
            candidates = [destination.endpoint, *(destination.endpoints or {}).values()]
            for endpoint in candidates:
                url = None if endpoint is None else endpoint.url
                if url is not None and (url.path or "").strip("/") == receiver:
                    assert endpoint is not None
                    return endpoint.signing_secret(settings)
    return development_signing_secret(settings, endpoint_id_of(receiver))


_ROUTES: dict[tuple[str, str], RoutesConfig | None] = {}


def _routes(settings: HubSettings) -> RoutesConfig | None:
    """The routes the hub uses (loaded once per routes file and environment), or None when they
    do not load: then every receiver verifies with its development secret."""
    cache_key = (str(settings.routes_file), settings.environment)
    if cache_key not in _ROUTES:
        try:
            _ROUTES[cache_key] = load_routes(settings)
        except Exception as error:  # a receiver without routes still plays every endpoint
            log.warning("receivers.routes_not_loaded", error=str(error))
            _ROUTES[cache_key] = None
    return _ROUTES[cache_key]

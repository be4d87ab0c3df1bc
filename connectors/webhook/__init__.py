"""Outbound delivery over HTTP, signed per Standard Webhooks (``hub deliver``)."""

from connectors.webhook.transport import WebhookTransport, http_client

__all__ = ["WebhookTransport", "http_client"]

"""TE integration hub: the event-driven backbone of the municipal employment services."""

__version__ = "0.1.0"

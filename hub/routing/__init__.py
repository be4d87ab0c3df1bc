"""Routing: routes as data, projection by legal basis, outbox encoding.

``routes`` loads and checks the routes file, ``resolve`` evaluates routes for one event (pure),
``projection`` keeps only the fields a route grants (from the schemas' ``pii`` classes) and
derives the outbox schemas, ``outbox`` encodes and decodes outbox values.
"""

"""The broker's HTTP side (aiohttp, in the broker's event loop): Prometheus ``/metrics``,
``/health`` and ``/ready`` (server.py); the JSON API under ``/api/v1`` for topics, records and
groups (api.py, described by openapi.py, reaching other brokers through peers.py); and the web
console, static files in ``static/``.
"""

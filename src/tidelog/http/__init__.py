"""The broker's HTTP side (aiohttp, in the broker's event loop): Prometheus ``/metrics``,
``/health`` and ``/ready`` (server.py); the JSON API under ``/api/v1`` for topics, records and
groups (api.py with a module per resource: topic_routes.py, record_routes.py, group_routes.py;
errors.py, params.py, cluster_view.py, record_reader.py beside them), described by openapi.py,
reaching other brokers through peers.py; and the web console, static files in ``static/``.
"""

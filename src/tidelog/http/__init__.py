"""The broker's HTTP side: Prometheus /metrics and health now; the admin API and console later."""

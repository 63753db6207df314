"""The daemon's HTTP listener (off unless ``run --http-address``): ``/metrics`` for Prometheus
and a read-only status page. See server.py and docs/status-page.md."""

"""Prometheus metrics of the agent: `agent` (the agent's own metrics), `server` (the HTTP
endpoint serving a registry). Hubble's flow metrics are in `pylium.hubble.metrics`."""

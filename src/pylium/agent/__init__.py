"""pylium-agent: one per node; IPAM, endpoints and the REST API on its unix socket."""

"""Flow observability in Hubble's model: datapath events become enriched flows, kept in a
bounded ring, filtered with Hubble's semantics and served over the agent's REST API.

Modules: `flow` (the model and its JSON/text forms), `parser` (event -> flow), `endpoints`
(who owns an address), `ring` (recent flows and followers), `filters`, `observer` (the agent
component), `rest` (the routes), `merge` (several agents' flows as one stream, for the CLI).
Import them directly; this package imports nothing heavy.
"""

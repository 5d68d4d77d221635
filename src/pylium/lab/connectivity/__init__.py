"""`pylium connectivity test` (Cilium's name) for a lab: deploy test pods, probe, report.

- `deploy`: the `pylium-test` namespace, its client and echo pods pinned to nodes, and a
  listener in every node namespace (pod-to-host)
- `scenarios`: each scenario as a small object naming its probes (later issues add more)
- `runner`: run the selected scenarios' probes from inside the client pod, collect results
"""

"""`pylium connectivity test` (Cilium's name) for a lab: deploy test pods, probe, report.

- `deploy`: the `pylium-test` namespace, its client and echo pods pinned to nodes, and a
  listener in every node namespace (pod-to-host) and on the world's gateway address
- `scenarios`: each scenario as a small object naming its probes (later issues add more)
- `policy`: the policy scenarios, each applying a policy to the test namespace while it runs
- `runner`: run the selected scenarios' probes from inside the client pod, collect results
"""

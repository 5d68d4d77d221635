"""The lab: a cluster's networking on one machine, out of network namespaces (DESIGN §5).

Modules, one concern each:

- `record`: the lab record (lab.json) and every name, path and address a lab uses
- `netns`, `cgroup`, `process`: named namespaces, node cgroups, detached processes by pid
- `underlay`: the underlay bridge joining the nodes' uplinks, and the world namespace
- `cniconf`: a node's CNI bin dir and conflist; `cnichain`: running a conflist as libcni does
- `cluster`: the store objects a lab starts with (namespaces, Node, CiliumNode), pod CIDRs
- `daemons`: starting and recognising the lab's daemons (per node: agent, lab kubelet, node
  routes; per lab: operator, scheduler, world server, etcd proxy)
- `scheduler`: binds unscheduled pods to the least loaded node
- `storeproxy`: lets node namespaces reach an etcd on the root namespace's loopback;
  `etcdkeys`: clearing a lab's keys from a shared etcd
- `up`, `down`, `status`, `health`: the lab's life cycle
- `kubelet`, `workqueue`, `sandbox`: the lab kubelet and the pod sandboxes it makes
- `podserver`: the built-in server pods run; `probe`: one connect-and-read
- `podaccess`: entering a pod's namespace and cgroup (exec, probe)
- `demo`: the `make demo` walkthrough
- `connectivity`: `pylium connectivity test` (deployment, scenarios, runner)
"""

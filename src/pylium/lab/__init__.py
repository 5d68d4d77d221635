"""The lab: a cluster's networking on one machine, out of network namespaces (DESIGN §5).

Modules, one concern each:

- `record`: the lab record (lab.json) and every name and path a lab uses
- `netns`, `cgroup`, `process`: named namespaces, node cgroups, detached processes by pid
- `cniconf`: a node's CNI bin dir and conflist; `cnichain`: running a conflist as libcni does
- `cluster`: the store objects a lab starts with (namespaces, Node, CiliumNode)
- `daemons`: starting and recognising a node's agent and lab kubelet
- `up`, `down`, `status`, `health`: the lab's life cycle
- `kubelet`, `workqueue`, `sandbox`: the lab kubelet and the pod sandboxes it makes
- `podserver`: the built-in server pods run; `probe`: one connect-and-read
- `podaccess`: entering a pod's namespace and cgroup (exec, probe)
- `demo`: the `make demo` walkthrough
"""

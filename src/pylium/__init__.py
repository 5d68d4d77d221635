"""pylium: Kubernetes networking in the style of Cilium, with a Python control plane and an eBPF
datapath.

This package imports nothing at import time: the CNI plugin (`pylium.cni`) must start in tens of
milliseconds, so heavy modules are imported where they are used.
"""

__version__ = "0.1.0"

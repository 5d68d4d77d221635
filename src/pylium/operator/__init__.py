"""pylium-operator: cluster-wide work (DESIGN §1): per-node pod CIDRs from the cluster pool
(cluster-pool IPAM) or into `Node.spec.podCIDRs` (kubernetes IPAM), a CiliumNode per Node, and
garbage collection of unused identities."""

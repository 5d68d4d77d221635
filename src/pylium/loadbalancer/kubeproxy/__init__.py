"""The kube-proxy modes (`--kube-proxy-replacement=false`): the node's services as iptables or
nftables rules laid out as kube-proxy lays them out. See README.md in this folder."""

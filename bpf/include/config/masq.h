/* Masquerade settings of the node's uplink programs (to-netdev, from-netdev), set by the loader
 * in .rodata (datapath/nat.py NatConfig). Conntrack lifetimes are node.h's. */
#pragma once

#include <linux/types.h>

/* Masquerade pod traffic (Cilium's enable-bpf-masquerade); 0 when the uplink programs run
 * for the per-packet service path alone (lib/nodeport.h). */
volatile const __u8 enable_masquerade = 1;

/* The node's address on its uplink: the source masqueraded traffic leaves with. */
volatile const __be32 nat_node_ip = 0;

/* Destinations never masqueraded (Cilium's ipv4-native-routing-cidr: the cluster's pods are
 * reached with their own addresses), network order; mask 0 = none excluded. */
volatile const __be32 nat_exclude_addr = 0;
volatile const __be32 nat_exclude_mask = 0;

/* Ports (and ICMP echo ids) handed to masqueraded flows, host order. Above the kernel's default
 * ephemeral range (32768-60999), so a mapping never takes a port a node socket may pick. */
volatile const __u16 nat_port_min = 61000;
volatile const __u16 nat_port_max = 65535;

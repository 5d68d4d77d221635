/* Per-node configuration, set by the loader in .rodata before load (never recompiled).
 *
 * Every global is `volatile const` so clang keeps the load (the value is unknown at compile
 * time) and the verifier sees the constant the loader wrote. Per-endpoint data (IP, ifindex,
 * MACs) is not here: it lives in the pylium_lxc maps, so one loaded program serves every
 * endpoint of the node. Names match datapath/lxc.py NodeConfig.
 */
#pragma once

#include <linux/types.h>

/* The node's router (gateway) IPv4 address, network byte order: pods ARP for it. */
volatile const __be32 router_ip = 0;

/* The node's pod CIDR (network order): a destination inside it without an endpoint is
 * dropped as "No matching local container found" instead of leaking to the stack. */
volatile const __be32 pod_cidr_addr = 0;
volatile const __be32 pod_cidr_mask = 0;

/* Tunnel routing: ifindex of the node's VXLAN device (collect-metadata mode), where
 * from-container sends remote-pod traffic; 0 = native routing (the stack forwards it). */
volatile const __u32 tunnel_ifindex = 0;

/* Trace event volume: 0 = one event per forwarded packet; 1 (Cilium's "medium") = only for
 * new connections and TCP flags seen for the first time in a direction. Drops always report. */
volatile const __u8 monitor_aggregation = 1;

/* Flow export: 0 = no trace events at all (drops still report), for measuring what export
 * costs against a datapath that writes none. */
volatile const __u8 trace_events = 1;

/* Conntrack lifetimes in seconds, Cilium's defaults. */
volatile const __u32 ct_lifetime_tcp = 21600;
volatile const __u32 ct_lifetime_nontcp = 60;
volatile const __u32 ct_syn_timeout = 60;
volatile const __u32 ct_close_timeout = 10;

/* Types and maps shared by every program. Struct layouts are mirrored by ctypes structures in
 * src/pylium/datapath/lxc.py: change both together. */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "config/node.h"

#define ETH_ALEN 6

/* Direction of a packet relative to the endpoint (Cilium's METRIC_INGRESS/METRIC_EGRESS). */
#define METRIC_INGRESS 1 /* to the pod: to-container */
#define METRIC_EGRESS 2	 /* from the pod: from-container */

/* One local endpoint (pod), keyed by its IPv4 address in pylium_lxc and by the ifindex of its
 * host-side veth in pylium_lxc_if. */
struct endpoint_info {
	__u32 ifindex;		   /* host-side veth */
	__u16 lxc_id;		   /* endpoint id */
	__u16 flags;		   /* reserved, 0 */
	__be32 ip4;		   /* the pod's address */
	__u8 mac[ETH_ALEN];	   /* the pod's MAC (inside the pod) */
	__u8 node_mac[ETH_ALEN];   /* the host-side veth MAC, which answers for the router */
	__u32 sec_identity;	   /* the pod's security identity (from the ipcache) */
};

struct endpoint_key {
	__be32 ip4;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_lxc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* host-side ifindex */
	__type(value, struct endpoint_info);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_lxc_if SEC(".maps");

/* Source NAT (masquerade) of pod traffic leaving the node, in Cilium's shape (bpf/lib/nat.h):
 * one LRU map, pylium_snat_v4_external, holds both directions of every mapping.
 *
 *   egress  (pod:port -> world:dport, NAT_DIR_EGRESS)          -> { node_ip, nat_port }
 *   ingress (world:dport -> node_ip:nat_port, NAT_DIR_INGRESS) -> { pod,     port     }
 *
 * to-netdev looks the egress tuple up, allocates a port when there is none (a random start in
 * [nat_port_min, nat_port_max], NAT_COLLISION_RETRIES tries, the ingress entry inserted first
 * with BPF_NOEXIST so two flows never share one), and rewrites source address and port.
 * from-netdev looks the reply's tuple up as an ingress key and rewrites destination address and
 * port back. ICMP echo is mapped by its identifier (both "ports" of the tuple carry it). The map
 * is the whole state: no conntrack entry is made for masqueraded flows. A pod's reply to a
 * connection made to it (an inbound conntrack entry) is never masqueraded. Each packet refreshes
 * its direction's entry; user space (datapath/nat.py) deletes a pair once both have expired.
 */
#pragma once

#include "common.h"
#include "ct.h"
#include "ipv4.h"
#include "config/masq.h"
#include "verdict.h"

/* Cilium's drop reasons for NAT (pkg/monitor/api/drop.go). */
#define DROP_NAT_NO_MAPPING 167	  /* "No mapping for NAT masquerade" */
#define DROP_NAT_UNSUPP_PROTO 168 /* "Unsupported protocol for NAT masquerade" */

#define NAT_DIR_EGRESS 0
#define NAT_DIR_INGRESS 1

#define NAT_COLLISION_RETRIES 32

/* nat4_entry.flags */
#define NAT_F_CLOSING 0x01 /* FIN or RST seen in this entry's direction */

struct nat4_tuple {
	__be32 daddr;
	__be32 saddr;
	__be16 dport;
	__be16 sport;
	__u8 nexthdr;
	__u8 flags; /* NAT_DIR_EGRESS or NAT_DIR_INGRESS */
	__u16 pad;
};

struct nat4_entry {
	__be32 to_addr;	 /* egress: the node IP; ingress: the pod */
	__be16 to_port;	 /* egress: the allocated port; ingress: the pod's port (ICMP: echo id) */
	__u8 flags;	 /* NAT_F_* */
	__u8 pad;
	__u32 lifetime;	 /* expiry, seconds of CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 created;	 /* seconds of CLOCK_MONOTONIC */
	__u64 packets;	 /* packets translated in this direction */
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat4_tuple);
	__type(value, struct nat4_entry);
	__uint(max_entries, 65536);
} pylium_snat_v4_external SEC(".maps");

static __always_inline __u32 nat_now(void)
{
	return (__u32)(bpf_ktime_get_ns() / 1000000000ULL);
}

/* Lifetime of an entry after `tcp_flags` passed in its direction: conntrack's lifetimes
 * (config/node.h). */
static __always_inline __u32 nat_lifetime(const struct nat4_entry *entry, __u8 proto,
					  __u8 tcp_flags)
{
	if (proto != IPPROTO_TCP)
		return ct_lifetime_nontcp;
	if (entry->flags & NAT_F_CLOSING)
		return ct_close_timeout;
	if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		return ct_syn_timeout;
	return ct_lifetime_tcp;
}

static __always_inline void nat_touch(struct __sk_buff *ctx, struct nat4_entry *entry, __u8 proto,
				      __u8 tcp_flags)
{
	if (proto == IPPROTO_TCP && (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		entry->flags |= NAT_F_CLOSING;
	entry->lifetime = nat_now() + nat_lifetime(entry, proto, tcp_flags);
	__sync_fetch_and_add(&entry->packets, 1);
	__sync_fetch_and_add(&entry->bytes, ctx->len);
}

/* Can this packet be masqueraded? TCP, UDP and ICMP echo requests, first fragments only (a
 * later fragment has no ports to map). The pod never answers an echo from outside: the world
 * cannot reach it. */
static __always_inline int nat_supported(struct __sk_buff *ctx, const struct ipv4_flow *flow)
{
	__u8 icmp_type = 0;
	struct iphdr ip;

	if (bpf_skb_load_bytes(ctx, sizeof(struct ethhdr), &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.frag_off & bpf_htons(0x3fff)) /* MF or an offset */
		return 0;
	if (flow->proto == IPPROTO_TCP || flow->proto == IPPROTO_UDP)
		return 1;
	if (flow->proto != IPPROTO_ICMP)
		return 0;
	if (bpf_skb_load_bytes(ctx, sizeof(struct ethhdr) + ip.ihl * 4, &icmp_type, 1) < 0)
		return 0;
	return icmp_type == ICMP_ECHO;
}

/* Offset of the L4 header. */
static __always_inline int nat_l4_off(struct __sk_buff *ctx)
{
	__u8 vihl;

	if (bpf_skb_load_bytes(ctx, sizeof(struct ethhdr), &vihl, 1) < 0)
		return -1;
	return sizeof(struct ethhdr) + (vihl & 0x0f) * 4;
}

/* Rewrite one IPv4 address (`addr_off`: saddr or daddr) and one 16-bit port-like field
 * (`port_off`, absolute), fixing the IP checksum and the L4 checksum (TCP/UDP cover the
 * addresses in their pseudo header; ICMP does not). */
static __always_inline int nat_rewrite(struct __sk_buff *ctx, __u8 proto, __u32 addr_off,
				       __be32 old_addr, __be32 new_addr, __u32 port_off,
				       __be16 old_port, __be16 new_port)
{
	int l4 = nat_l4_off(ctx);
	__u32 csum_off;
	__u64 pseudo = BPF_F_PSEUDO_HDR;

	if (l4 < 0)
		return -1;
	switch (proto) {
	case IPPROTO_TCP:
		csum_off = l4 + offsetof(struct tcphdr, check);
		break;
	case IPPROTO_UDP:
		csum_off = l4 + offsetof(struct udphdr, check);
		/* A zero UDP checksum means "none": keep it so. */
		pseudo |= BPF_F_MARK_MANGLED_0;
		break;
	default:
		csum_off = l4 + offsetof(struct icmphdr, checksum);
		pseudo = 0;
	}
	if (old_addr != new_addr) {
		if (pseudo && bpf_l4_csum_replace(ctx, csum_off, old_addr, new_addr,
						  pseudo | sizeof(new_addr)) < 0)
			return -1;
		if (bpf_l3_csum_replace(ctx, sizeof(struct ethhdr) + offsetof(struct iphdr, check),
					old_addr, new_addr, sizeof(new_addr)) < 0)
			return -1;
		if (bpf_skb_store_bytes(ctx, addr_off, &new_addr, sizeof(new_addr), 0) < 0)
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(ctx, csum_off, old_port, new_port,
					(pseudo & BPF_F_MARK_MANGLED_0) | sizeof(new_port)) < 0)
			return -1;
		if (bpf_skb_store_bytes(ctx, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -1;
	}
	return 0;
}

/* Offset of the port the NAT rewrites: TCP/UDP source (egress) or destination (ingress)
 * port; ICMP echo: the identifier either way. */
static __always_inline __u32 nat_port_off(__u32 l4, __u8 proto, int egress)
{
	if (proto == IPPROTO_ICMP)
		return l4 + offsetof(struct icmphdr, un.echo.id);
	return l4 + (egress ? offsetof(struct udphdr, source) : offsetof(struct udphdr, dest));
}

/* The ingress (reply) key of a mapping from `flow` (egress) to node_ip:port. */
static __always_inline void nat_reply_key(struct nat4_tuple *key, const struct ipv4_flow *flow,
					  __be16 port)
{
	key->saddr = flow->daddr;
	key->daddr = nat_node_ip;
	/* An echo reply carries the (translated) id in both slots, as ipv4_parse reads it. */
	key->sport = flow->proto == IPPROTO_ICMP ? port : flow->dport;
	key->dport = port;
	key->nexthdr = flow->proto;
	key->flags = NAT_DIR_INGRESS;
	key->pad = 0;
}

/* Find or create the mapping of an egress flow; returns the egress entry or NULL (no port
 * left, or the map refused the insert). */
static __always_inline struct nat4_entry *snat_v4_mapping(struct __sk_buff *ctx,
							  const struct ipv4_flow *flow)
{
	struct nat4_tuple key = {
		.daddr = flow->daddr,
		.saddr = flow->saddr,
		.dport = flow->dport,
		.sport = flow->sport,
		.nexthdr = flow->proto,
		.flags = NAT_DIR_EGRESS,
	};
	struct nat4_tuple rkey;
	struct nat4_entry *entry = bpf_map_lookup_elem(&pylium_snat_v4_external, &key);
	__u32 range = (__u32)nat_port_max - nat_port_min + 1;
	__u32 start = bpf_get_prandom_u32();
	__u32 now = nat_now();
	__u16 port = 0;
	int i;

	if (entry)
		return entry;
	struct nat4_entry rstate = {
		.to_addr = flow->saddr,
		.to_port = flow->sport,
		.created = now,
		.lifetime = now + ct_syn_timeout,
	};
	struct nat4_entry state = {
		.to_addr = nat_node_ip,
		.created = now,
		.lifetime = now + ct_syn_timeout,
	};

	for (i = 0; i < NAT_COLLISION_RETRIES; i++) {
		port = nat_port_min + (start + i) % range;
		nat_reply_key(&rkey, flow, bpf_htons(port));
		if (bpf_map_update_elem(&pylium_snat_v4_external, &rkey, &rstate, BPF_NOEXIST) == 0)
			break;
	}
	if (i == NAT_COLLISION_RETRIES)
		return NULL;
	state.to_port = bpf_htons(port);
	if (bpf_map_update_elem(&pylium_snat_v4_external, &key, &state, BPF_NOEXIST) < 0) {
		bpf_map_delete_elem(&pylium_snat_v4_external, &rkey);
		return NULL;
	}
	return bpf_map_lookup_elem(&pylium_snat_v4_external, &key);
}

/* Masquerade an egress packet of `flow` (already known to need it). 0, or a drop reason. */
static __always_inline int snat_v4_egress(struct __sk_buff *ctx, const struct ipv4_flow *flow)
{
	struct nat4_entry *entry = snat_v4_mapping(ctx, flow);
	int l4 = nat_l4_off(ctx);

	if (!entry)
		return DROP_NAT_NO_MAPPING;
	if (l4 < 0)
		return DROP_INVALID;
	nat_touch(ctx, entry, flow->proto, flow->tcp_flags);
	if (flow->proto == IPPROTO_TCP && (flow->tcp_flags & TCP_FLAG_RST)) {
		/* The other side will not answer a reset: let the reply entry expire too. */
		struct nat4_tuple rkey;
		struct nat4_entry *reply;

		nat_reply_key(&rkey, flow, entry->to_port);
		reply = bpf_map_lookup_elem(&pylium_snat_v4_external, &rkey);
		if (reply) {
			reply->flags |= NAT_F_CLOSING;
			reply->lifetime = entry->lifetime;
		}
	}
	if (nat_rewrite(ctx, flow->proto, sizeof(struct ethhdr) + offsetof(struct iphdr, saddr),
			flow->saddr, entry->to_addr, nat_port_off(l4, flow->proto, 1), flow->sport,
			entry->to_port) < 0)
		return DROP_INVALID;
	return 0;
}

/* Reverse-translate a packet to the node IP if it answers a mapping: 1 when rewritten, 0 when
 * no mapping matches (the packet is the node's own), or a negative drop reason. */
static __always_inline int snat_v4_ingress(struct __sk_buff *ctx, const struct ipv4_flow *flow)
{
	struct nat4_tuple key = {
		.daddr = flow->daddr,
		.saddr = flow->saddr,
		.dport = flow->dport,
		.sport = flow->sport,
		.nexthdr = flow->proto,
		.flags = NAT_DIR_INGRESS,
	};
	struct nat4_entry *entry;
	int l4;

	if (flow->daddr != nat_node_ip)
		return 0;
	entry = bpf_map_lookup_elem(&pylium_snat_v4_external, &key);
	if (!entry)
		return 0;
	l4 = nat_l4_off(ctx);
	if (l4 < 0)
		return -DROP_INVALID;
	nat_touch(ctx, entry, flow->proto, flow->tcp_flags);
	if (nat_rewrite(ctx, flow->proto, sizeof(struct ethhdr) + offsetof(struct iphdr, daddr),
			flow->daddr, entry->to_addr, nat_port_off(l4, flow->proto, 0), flow->dport,
			entry->to_port) < 0)
		return -DROP_INVALID;
	return 1;
}

/* Does the packet answer a connection tracked inbound (TUPLE_F_IN: made to the pod)? */
static __always_inline int nat_is_inbound_reply(const struct ipv4_flow *flow)
{
	return ct4_lookup_reply(flow, TUPLE_F_OUT) != NULL;
}

/* Per-packet service load balancing on the node's uplink (Cilium's nodeport.h in spirit):
 * NodePort (the 0.0.0.0 wildcard frontend, on the node IP), LoadBalancer IPs and externalIPs
 * (exact frontends) for clients outside the cluster.
 *
 * Forward (from-netdev): a new flow to a frontend gets a backend (affinity, then
 * lb4_select_backend), remembered in pylium_lb4_nodeport under the client's tuple
 * (NAT_DIR_EGRESS), so every later packet of the flow takes the same one. The destination
 * becomes the backend. A local backend keeps the client's address (the stack routes the packet
 * to the pod's veth, to-container decides policy as for any world traffic). A remote backend of
 * an externalTrafficPolicy=Cluster service is also source-NATed to the node IP and a port of
 * the NAT range (lib/nat.h's pylium_snat_v4_external, as Cilium's SNAT mode), so its replies
 * come back through this node, and leaves by the tunnel (tunnel key from the ipcache) or by the
 * uplink (native routing).
 *
 * Reply: the backend's answer, once reverse-SNATed (remote: from-netdev) or as the pod sends it
 * (local: to-netdev), is keyed backend:port -> client:port (NAT_DIR_INGRESS) and gets the
 * frontend back as its source.
 *
 * A service without any backend refuses (TCP RST, ICMP port unreachable) instead of dropping.
 *
 * Entries live until the LRU evicts them (a flow re-uses its tuple's entry, so a stale one only
 * pins the backend choice of a client port that comes back).
 */
#pragma once

#include "common.h"
#include "encap.h"
#include "eth.h"
#include "ipcache.h"
#include "ipv4.h"
#include "lb.h"
#include "nat.h"
#include "verdict.h"

#define DROP_NO_SERVICE 158 /* Cilium's "Service backend not found" */

/* Set by the loader (.rodata, datapath/nat.py NatConfig): Cilium's enable-node-port (also
 * LoadBalancer IPs) and enable-external-ips. */
volatile const __u8 enable_node_port = 0;
volatile const __u8 enable_external_ips = 0;

struct lb4_nat_entry {
	__be32 addr;  /* forward: the backend; reply: the frontend */
	__be16 port;
	__u8 snat;    /* forward: the flow is also source-NATed (remote backend) */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat4_tuple);
	__type(value, struct lb4_nat_entry);
	__uint(max_entries, 65536);
} pylium_lb4_nodeport SEC(".maps");

static __always_inline void nodeport_key(struct nat4_tuple *key, __be32 saddr, __be32 daddr,
					 __be16 sport, __be16 dport, __u8 proto, __u8 dir)
{
	key->saddr = saddr;
	key->daddr = daddr;
	key->sport = sport;
	key->dport = dport;
	key->nexthdr = proto;
	key->flags = dir;
	key->pad = 0;
}

/* The external frontend of a packet arriving from outside, or NULL. */
static __always_inline struct lb4_service *nodeport_lookup(struct lb4_key *key,
							   const struct ipv4_flow *flow)
{
	struct lb4_service *svc;

	key->address = flow->daddr;
	key->dport = flow->dport;
	key->proto = flow->proto;
	svc = lb4_lookup_service(key, 0);
	if (svc) {
		/* A node address's own NodePort frontend counts as the wildcard's. */
		if (enable_node_port && (svc->flags & (SVC_FLAG_LOADBALANCER | SVC_FLAG_NODEPORT)))
			return svc;
		if (enable_external_ips && (svc->flags & SVC_FLAG_EXTERNAL_IP))
			return svc;
		return NULL; /* a ClusterIP is not served to the outside */
	}
	if (!enable_node_port || flow->daddr != nat_node_ip)
		return NULL;
	key->address = 0;
	svc = lb4_lookup_service(key, 0);
	return svc && (svc->flags & SVC_FLAG_NODEPORT) ? svc : NULL;
}

static __always_inline __sum16 nodeport_csum_fold(__s64 sum)
{
	__u32 folded = (__u32)sum;

	folded = (folded & 0xffff) + (folded >> 16);
	folded = (folded & 0xffff) + (folded >> 16);
	return (__sum16)~folded;
}

/* The reject's IPv4 header from the node (`saddr`, the frontend) back to the client. */
static __always_inline void nodeport_reject_ip(struct iphdr *ip, __be32 saddr, __be32 daddr,
					       __u8 proto, __u16 len)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(len);
	ip->frag_off = bpf_htons(0x4000); /* DF */
	ip->ttl = 64;
	ip->protocol = proto;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = nodeport_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0));
}

/* Turn a TCP SYN into the RST|ACK that refuses it. */
static __always_inline int nodeport_reject_tcp(struct __sk_buff *ctx, const struct ipv4_flow *flow)
{
	struct {
		struct iphdr ip;
		struct tcphdr tcp;
	} out = {};
	struct {
		__be32 saddr, daddr;
		__u8 zero, proto;
		__be16 len;
	} pseudo = { flow->daddr, flow->saddr, 0, IPPROTO_TCP, bpf_htons(sizeof(struct tcphdr)) };
	struct tcphdr in;
	__s64 sum;

	if (!(flow->tcp_flags & TCP_FLAG_SYN) || (flow->tcp_flags & TCP_FLAG_ACK))
		return -1;
	if (bpf_skb_load_bytes(ctx, sizeof(struct ethhdr) + sizeof(struct iphdr), &in,
			       sizeof(in)) < 0)
		return -1;
	out.tcp.source = flow->dport;
	out.tcp.dest = flow->sport;
	out.tcp.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + 1);
	out.tcp.doff = 5;
	out.tcp.rst = 1;
	out.tcp.ack = 1;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&out.tcp, sizeof(out.tcp), sum);
	out.tcp.check = nodeport_csum_fold(sum);
	nodeport_reject_ip(&out.ip, flow->daddr, flow->saddr, IPPROTO_TCP, sizeof(out));
	if (bpf_skb_change_tail(ctx, sizeof(struct ethhdr) + sizeof(out), 0) < 0)
		return -1;
	return bpf_skb_store_bytes(ctx, sizeof(struct ethhdr), &out, sizeof(out), 0);
}

/* Turn a UDP datagram into the ICMP port unreachable that refuses it (its IP header and first
 * 8 bytes quoted). */
static __always_inline int nodeport_reject_udp(struct __sk_buff *ctx, const struct ipv4_flow *flow)
{
	struct {
		struct iphdr ip;
		struct icmphdr icmp;
		__u8 quoted[sizeof(struct iphdr) + 8];
	} out = {};

	if (bpf_skb_load_bytes(ctx, sizeof(struct ethhdr), out.quoted, sizeof(out.quoted)) < 0)
		return -1;
	out.icmp.type = ICMP_DEST_UNREACH;
	out.icmp.code = ICMP_PORT_UNREACH;
	out.icmp.checksum = nodeport_csum_fold(bpf_csum_diff(
		NULL, 0, (__be32 *)&out.icmp, sizeof(out.icmp) + sizeof(out.quoted), 0));
	nodeport_reject_ip(&out.ip, flow->daddr, flow->saddr, IPPROTO_ICMP, sizeof(out));
	if (bpf_skb_change_tail(ctx, sizeof(struct ethhdr) + sizeof(out), 0) < 0)
		return -1;
	return bpf_skb_store_bytes(ctx, sizeof(struct ethhdr), &out, sizeof(out), 0);
}

/* Refuse a packet to a service without backends (Cilium's tail_no_service_ipv4): a TCP RST or
 * an ICMP port unreachable back out of the device it came in on, counted as a drop for "Service
 * backend not found". A packet that cannot be answered so (not a SYN, IP options) is dropped. */
static __always_inline int nodeport_reject(struct __sk_buff *ctx, const struct ipv4_flow *flow)
{
	struct ethhdr eth;
	__u8 vihl;
	int ret;

	send_drop(ctx, 0, DROP_NO_SERVICE, METRIC_INGRESS, flow);
	if (bpf_skb_load_bytes(ctx, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(ctx, sizeof(struct ethhdr), &vihl, 1) < 0 || (vihl & 0x0f) != 5)
		return TC_ACT_SHOT;
	ret = flow->proto == IPPROTO_TCP ? nodeport_reject_tcp(ctx, flow)
					 : nodeport_reject_udp(ctx, flow);
	if (ret < 0 || eth_store_addrs(ctx, eth.h_dest, eth.h_source) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(ctx->ifindex, 0);
}

/* Choose the backend of a new flow and remember it; a negative drop reason when there is none. */
static __always_inline int nodeport_new_flow(const struct ipv4_flow *flow,
					     struct lb4_service *svc, struct lb4_key *key,
					     struct lb4_nat_entry *fwd)
{
	struct lb4_affinity_key aff = {};
	struct lb4_backend *backend;
	struct endpoint_key ep_key;
	struct nat4_tuple tuple;
	struct lb4_nat_entry rev = {
		.addr = flow->daddr,
		.port = flow->dport,
	};
	__u32 backend_id = 0;

	if (!svc->count)
		return -DROP_NO_SERVICE;
	if (svc->flags & SVC_FLAG_AFFINITY) {
		aff.client_id = flow->saddr;
		aff.rev_nat_id = svc->rev_nat_index;
		backend_id = lb4_affinity_backend_id(svc, &aff);
	}
	if (!backend_id)
		backend_id = lb4_select_backend(
			key, svc,
			lb4_flow_hash(flow->saddr, flow->daddr, flow->sport, flow->dport, flow->proto));
	backend = lb4_lookup_backend(backend_id);
	if (!backend)
		return -DROP_NO_SERVICE;
	if (svc->flags & SVC_FLAG_AFFINITY)
		lb4_update_affinity(&aff, backend_id);
	ep_key.ip4 = backend->address;
	fwd->addr = backend->address;
	fwd->port = backend->port;
	fwd->snat = !bpf_map_lookup_elem(&pylium_lxc, &ep_key) &&
		    !(svc->flags & SVC_FLAG_EXT_LOCAL_SCOPE);
	fwd->pad = 0;
	nodeport_key(&tuple, backend->address, flow->saddr, backend->port, flow->sport, flow->proto,
		     NAT_DIR_INGRESS);
	if (bpf_map_update_elem(&pylium_lb4_nodeport, &tuple, &rev, BPF_ANY) < 0)
		return -DROP_NAT_NO_MAPPING;
	nodeport_key(&tuple, flow->saddr, flow->daddr, flow->sport, flow->dport, flow->proto,
		     NAT_DIR_EGRESS);
	if (bpf_map_update_elem(&pylium_lb4_nodeport, &tuple, fwd, BPF_ANY) < 0)
		return -DROP_NAT_NO_MAPPING;
	return 0;
}

/* Send a source-NATed packet to its remote backend: into the tunnel when the ipcache places the
 * backend behind another node, else out of the uplink to the routed next hop. */
static __always_inline int nodeport_to_remote(struct __sk_buff *ctx, __be32 backend)
{
	const struct ipcache_value *remote = ipcache_lookup4(backend);

	if (ipv4_dec_ttl(ctx) < 0)
		return -DROP_INVALID;
	if (tunnel_ifindex && remote && (remote->flags & IPCACHE_FLAG_HAS_TUNNEL_EP) &&
	    !(remote->flags & IPCACHE_FLAG_SKIP_TUNNEL)) {
		if (encap_set_key(ctx, remote->tunnel_endpoint, IDENTITY_REMOTE_NODE) < 0)
			return -DROP_NO_TUNNEL_ENDPOINT;
		return bpf_redirect(tunnel_ifindex, 0);
	}
	return bpf_redirect_neigh(ctx->ifindex, NULL, 0, 0);
}

/* Load-balance a packet from outside to a service frontend. Returns TC_ACT_OK to pass it (not a
 * service, or translated for a local backend), a redirect verdict, or a negative drop reason. */
static __always_inline int nodeport_lb4(struct __sk_buff *ctx, struct ipv4_flow *flow)
{
	struct nat4_tuple tuple;
	struct lb4_nat_entry fresh, *fwd;
	struct lb4_service *svc;
	struct lb4_key key = {};
	int l4, ret;

	if (flow->proto != IPPROTO_TCP && flow->proto != IPPROTO_UDP)
		return TC_ACT_OK;
	nodeport_key(&tuple, flow->saddr, flow->daddr, flow->sport, flow->dport, flow->proto,
		     NAT_DIR_EGRESS);
	fwd = bpf_map_lookup_elem(&pylium_lb4_nodeport, &tuple);
	if (!fwd) {
		svc = nodeport_lookup(&key, flow);
		if (!svc)
			return TC_ACT_OK;
		if (!svc->count && (svc->flags2 & SVC_FLAG2_REJECT))
			return nodeport_reject(ctx, flow);
		ret = nodeport_new_flow(flow, svc, &key, &fresh);
		if (ret < 0)
			return ret;
		fwd = &fresh;
	}
	l4 = nat_l4_off(ctx);
	if (l4 < 0)
		return -DROP_INVALID;
	if (nat_rewrite(ctx, flow->proto, sizeof(struct ethhdr) + offsetof(struct iphdr, daddr),
			flow->daddr, fwd->addr, nat_port_off(l4, flow->proto, 0), flow->dport,
			fwd->port) < 0)
		return -DROP_INVALID;
	if (!fwd->snat)
		return TC_ACT_OK;
	flow->daddr = fwd->addr;
	flow->dport = fwd->port;
	ret = snat_v4_egress(ctx, flow);
	if (ret)
		return -ret;
	return nodeport_to_remote(ctx, flow->daddr);
}

/* Give a backend's reply the frontend as its source if it answers a load-balanced flow:
 * 1 when rewritten, 0 when not such a reply, or a negative drop reason. */
static __always_inline int nodeport_rev_dnat(struct __sk_buff *ctx, const struct ipv4_flow *flow)
{
	struct nat4_tuple tuple;
	struct lb4_nat_entry *rev;
	int l4;

	nodeport_key(&tuple, flow->saddr, flow->daddr, flow->sport, flow->dport, flow->proto,
		     NAT_DIR_INGRESS);
	rev = bpf_map_lookup_elem(&pylium_lb4_nodeport, &tuple);
	if (!rev)
		return 0;
	l4 = nat_l4_off(ctx);
	if (l4 < 0)
		return -DROP_INVALID;
	if (nat_rewrite(ctx, flow->proto, sizeof(struct ethhdr) + offsetof(struct iphdr, saddr),
			flow->saddr, rev->addr, nat_port_off(l4, flow->proto, 1), flow->sport,
			rev->port) < 0)
		return -DROP_INVALID;
	return 1;
}

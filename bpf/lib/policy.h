/* Network policy, L3/L4 (Cilium's bpf/lib/policy.h, one map for all endpoints).
 *
 * pylium_policy is one LPM trie for every endpoint of the node instead of Cilium's
 * cilium_policy_<epid> per endpoint: its key is Cilium's struct policy_key with the endpoint
 * id in front, always matched in full, so the agent writes plain rows (no map-in-map) and the
 * loaded programs never need a new map when an endpoint appears. The rest of the key and the
 * value are the layout of src/pylium/policy/mapstate.py (datapath/policy.py adds the id).
 *
 * pylium_policy_ep holds per endpoint which directions are enforced and whether audit mode is
 * on; an endpoint without an entry is not enforced.
 *
 * pylium_policy_cidr holds the node's CIDR classes: every prefix a CIDR rule names (ipBlock,
 * fromCIDR/toCIDR, the parts of a CIDRSet left by its excepts) -> two class identities. The
 * peer's address finds its class by longest prefix; the agent lets every rule prefix that
 * contains the class's prefix select it (as Cilium's CIDR identities carry the labels of every
 * covering prefix), so the one longest match is enough. A peer outside the cluster (world or
 * unknown identity) uses `world`, selected by every CIDR rule; a peer with an in-cluster
 * identity (pod, node) uses `cluster`, selected only by Kubernetes ipBlock, which matches any
 * address, while Cilium's CIDR rules are for peers that are not endpoints.
 *
 * Only NEW connections are looked up: conntrack lets established packets and replies through.
 * Lookups: the peer identity, the peer address's CIDR class, identity 0 (any); a deny hit in
 * any drops (DROP_POLICY_DENY), else any allow hit passes, else the enforced direction drops
 * (DROP_POLICY). Audit mode passes what would have dropped, reported as AUDIT. ICMP keys carry
 * the ICMP type in the port position, as Cilium's do.
 */
#pragma once

#include "common.h"
#include "drop.h"
#include "ipcache.h"
#include "ipv4.h"

#define POLICY_EP_F_INGRESS 0x01 /* ingress enforced */
#define POLICY_EP_F_EGRESS 0x02	 /* egress enforced */
#define POLICY_EP_F_AUDIT 0x04	 /* audit mode: report policy drops, pass the packets */

#define POLICY_ENTRY_F_DENY 0x01 /* policy_entry.flags: a deny rule */

/* Identities of peers outside the cluster: world, world-ipv4, world-ipv6; node-local ones. */
#define IDENTITY_WORLD 2
#define IDENTITY_WORLD_IPV4 9
#define IDENTITY_WORLD_IPV6 10
#define LOCAL_IDENTITY_FLAG (1 << 24)

/* Always-matched bits ahead of the protocol: endpoint id, peer identity, direction. */
#define POLICY_STATIC_PREFIX (32 + 32 + 8)
#define POLICY_FULL_PREFIX (POLICY_STATIC_PREFIX + 8 + 16)

struct policy_key {
	__u32 prefixlen; /* host order, as struct bpf_lpm_trie_key wants */
	__u32 ep_id;	 /* endpoint (lxc) id */
	__u32 sec_label; /* peer identity, host order; 0 = any identity */
	__u8 egress;	 /* 1 = egress, 0 = ingress */
	__u8 protocol;	 /* IPPROTO_*, 0 = any */
	__be16 dport;
};

struct policy_entry {
	__be16 proxy_port; /* 0: no L7 */
	__u8 flags;	   /* POLICY_ENTRY_F_DENY | lpm_prefix_length << 3 */
	__u8 auth_type;
	__u32 cookie;	   /* names the deciding rules in verdict events */
	__u64 packets;
	__u64 bytes;
};

struct policy_ep {
	__u32 flags; /* POLICY_EP_F_* */
};

struct policy_cidr_class {
	__u32 world;   /* class identity for a peer outside the cluster */
	__u32 cluster; /* class identity for a peer with an in-cluster identity */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* endpoint (lxc) id */
	__type(value, struct policy_ep);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_policy_ep SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key); /* an address prefix, as the ipcache's */
	__type(value, struct policy_cidr_class);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_policy_cidr SEC(".maps");

static __always_inline struct policy_entry *policy_lookup(__u16 ep_id, __u32 peer, __u8 egress,
							   const struct ipv4_flow *flow)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.ep_id = ep_id,
		.sec_label = peer,
		.egress = egress,
		.protocol = flow->proto,
		/* ICMP: the flow's ports are the echo id; keys hold the type there. */
		.dport = flow->proto == IPPROTO_ICMP ? bpf_htons(flow->icmp_type) : flow->dport,
	};

	return bpf_map_lookup_elem(&pylium_policy, &key);
}

/* The CIDR class identity of a peer address, 0 when no CIDR rule's prefix holds it. */
static __always_inline __u32 policy_cidr_class(__be32 addr, __u32 peer)
{
	struct ipcache_key key = { .prefixlen = 32, .ip = addr };
	struct policy_cidr_class *class = bpf_map_lookup_elem(&pylium_policy_cidr, &key);

	if (!class)
		return 0;
	if (!peer || peer == IDENTITY_WORLD || peer == IDENTITY_WORLD_IPV4 ||
	    peer == IDENTITY_WORLD_IPV6 || (peer & LOCAL_IDENTITY_FLAG))
		return class->world;
	return class->cluster;
}

/* The deciding entry of up to three hits: the first deny, else the first allow. */
static __always_inline struct policy_entry *policy_pick(struct policy_entry *a,
							struct policy_entry *b,
							struct policy_entry *c)
{
	if (a && (a->flags & POLICY_ENTRY_F_DENY))
		return a;
	if (b && (b->flags & POLICY_ENTRY_F_DENY))
		return b;
	if (c && (c->flags & POLICY_ENTRY_F_DENY))
		return c;
	return a ? a : b ? b : c;
}

/* Decide a NEW connection of endpoint `ep_id` with `peer` in one direction (METRIC_INGRESS or
 * METRIC_EGRESS). Returns 0 to pass or the drop reason; sets flow->policy_verdict and
 * flow->policy_cookie for the packet's event. */
static __always_inline int policy_check(struct __sk_buff *ctx, __u16 ep_id, __u32 peer, __u8 dir,
					struct ipv4_flow *flow)
{
	__u32 id = ep_id;
	struct policy_ep *cfg = bpf_map_lookup_elem(&pylium_policy_ep, &id);
	__u8 egress = dir == METRIC_EGRESS;
	__u32 enforced = egress ? POLICY_EP_F_EGRESS : POLICY_EP_F_INGRESS;
	struct policy_entry *exact, *cidr = NULL, *any, *hit;
	__u32 class;
	int reason = 0;

	if (!cfg || !(cfg->flags & enforced))
		return 0;
	class = policy_cidr_class(egress ? flow->daddr : flow->saddr, peer);
	exact = policy_lookup(ep_id, peer, egress, flow);
	if (class)
		cidr = policy_lookup(ep_id, class, egress, flow);
	any = peer ? policy_lookup(ep_id, 0, egress, flow) : NULL;
	hit = policy_pick(exact, cidr, any);

	if (hit) {
		__sync_fetch_and_add(&hit->packets, 1);
		__sync_fetch_and_add(&hit->bytes, ctx->len);
		flow->policy_cookie = hit->cookie;
		if (hit->flags & POLICY_ENTRY_F_DENY)
			reason = DROP_POLICY_DENY;
	} else {
		reason = DROP_POLICY;
	}
	if (!reason) {
		flow->policy_verdict = POLICY_VERDICT_ALLOWED;
		return 0;
	}
	if (cfg->flags & POLICY_EP_F_AUDIT) {
		flow->policy_verdict = POLICY_VERDICT_AUDIT;
		return 0;
	}
	flow->policy_verdict = POLICY_VERDICT_DENIED;
	return reason;
}

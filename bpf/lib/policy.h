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
 * Only NEW connections are looked up: conntrack lets established packets and replies through.
 * Lookup order is mapstate's: the peer identity, then identity 0 (any); a deny hit in either
 * drops (DROP_POLICY_DENY), else any allow hit passes, else the enforced direction drops
 * (DROP_POLICY). Audit mode passes what would have dropped, reported as AUDIT.
 */
#pragma once

#include "common.h"
#include "drop.h"
#include "ipv4.h"

#define POLICY_EP_F_INGRESS 0x01 /* ingress enforced */
#define POLICY_EP_F_EGRESS 0x02	 /* egress enforced */
#define POLICY_EP_F_AUDIT 0x04	 /* audit mode: report policy drops, pass the packets */

#define POLICY_ENTRY_F_DENY 0x01 /* policy_entry.flags: a deny rule */

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

static __always_inline struct policy_entry *policy_lookup(__u16 ep_id, __u32 peer, __u8 egress,
							   const struct ipv4_flow *flow)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.ep_id = ep_id,
		.sec_label = peer,
		.egress = egress,
		.protocol = flow->proto,
		/* ICMP: the flow's ports are the echo id, not a type; only "any port" matches. */
		.dport = flow->proto == IPPROTO_ICMP ? 0 : flow->dport,
	};

	return bpf_map_lookup_elem(&pylium_policy, &key);
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
	struct policy_entry *exact, *any, *hit;
	int reason = 0;

	if (!cfg || !(cfg->flags & enforced))
		return 0;
	exact = policy_lookup(ep_id, peer, egress, flow);
	any = peer ? policy_lookup(ep_id, 0, egress, flow) : NULL;
	if (exact && (exact->flags & POLICY_ENTRY_F_DENY))
		hit = exact;
	else if (any && (any->flags & POLICY_ENTRY_F_DENY))
		hit = any;
	else
		hit = exact ? exact : any;

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

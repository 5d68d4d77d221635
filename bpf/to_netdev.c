/* to-netdev: tcx egress of the node's uplink, i.e. every packet the node sends out.
 *
 * Path: a local backend's reply to a load-balanced flow from outside gets the frontend as its
 * source (lib/nodeport.h) and is never masqueraded. A packet from a local pod (its source is in
 * pylium_lxc) to a destination outside the native-routing CIDR is masqueraded: source address
 * and port become the node IP and a port of the masquerade range (lib/nat.h), so the outside
 * can answer a network that never heard of pod addresses. A reply to a connection made to the
 * pod (conntrack knows it inbound, e.g. from a node that source-NATed a load-balanced flow to
 * this backend) is never masqueraded: its peer expects the address it connected to.
 * Everything else leaves untouched: the node's own traffic, and pod traffic to other pods
 * (routed natively with its own addresses). A flow that cannot be mapped is dropped with
 * Cilium's NAT reasons.
 */
#include "common.h"
#include "lib/ipv4.h"
#include "lib/nat.h"
#include "lib/nodeport.h"
#include "lib/verdict.h"

SEC("tc")
int to_netdev(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct endpoint_key src_key;
	struct endpoint_info *src;
	struct ipv4_flow flow;
	__u16 source;
	int reason;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (!nat_node_ip || ipv4_parse(ctx, &flow) < 0)
		return TC_ACT_OK;
	src_key.ip4 = flow.saddr;
	src = bpf_map_lookup_elem(&pylium_lxc, &src_key);
	if (!src)
		return TC_ACT_OK; /* the node's own, or not from here */
	reason = nodeport_rev_dnat(ctx, &flow);
	if (reason < 0)
		return send_drop(ctx, src->lxc_id, -reason, METRIC_EGRESS, &flow);
	if (reason > 0 || !enable_masquerade)
		return TC_ACT_OK;
	if (ipv4_in_prefix(flow.daddr, nat_exclude_addr, nat_exclude_mask))
		return TC_ACT_OK; /* to a pod: never masqueraded */
	if (nat_is_inbound_reply(&flow))
		return TC_ACT_OK; /* answers a connection made to the pod: keep the address asked */
	source = src->lxc_id;
	if (!nat_supported(ctx, &flow))
		return send_drop(ctx, source, DROP_NAT_UNSUPP_PROTO, METRIC_EGRESS, &flow);
	reason = snat_v4_egress(ctx, &flow);
	if (reason)
		return send_drop(ctx, source, reason, METRIC_EGRESS, &flow);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";

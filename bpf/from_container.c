/* from-container: tc ingress (tcx) of a pod's host-side veth, i.e. every packet the pod sends.
 *
 * Path: identify the endpoint by the arrival ifindex (pylium_lxc_if); answer ARP for the
 * router IP; drop what is not IPv4 or whose source is not the endpoint's own address; track the
 * connection; decide a new connection with the endpoint's egress policy (lib/policy.h, peer =
 * the destination's identity); deliver to a local endpoint by redirect to its host-side veth
 * egress (to-container runs there, the host stack is skipped); in tunnel mode, send a
 * destination the ipcache places behind another node into the VXLAN device with the source
 * identity as VNI; hand the rest to the stack. A destination inside the node's pod CIDR with no endpoint is dropped. Events carry
 * the endpoint's identity as source and the destination's from the ipcache.
 */
#include "common.h"
#include "lib/arp.h"
#include "lib/ct.h"
#include "lib/encap.h"
#include "lib/eth.h"
#include "lib/ipcache.h"
#include "lib/ipv4.h"
#include "lib/policy.h"
#include "lib/verdict.h"

static __always_inline int handle_arp(struct __sk_buff *ctx, const struct endpoint_info *ep)
{
	struct arp_eth req;

	if (ep && router_ip && arp_is_request_for(ctx, router_ip, &req)) {
		if (arp_make_reply(ctx, &req, ep->node_mac, router_ip) < 0)
			return send_drop(ctx, ep->lxc_id, DROP_INVALID, METRIC_EGRESS, NULL);
		/* Back out of the veth it came in on: the pod gets its answer. */
		send_trace(ctx, ep->lxc_id, TRACE_TO_LXC, ctx->ifindex, CT_NEW, 1, METRIC_EGRESS,
			   NULL);
		return bpf_redirect(ctx->ifindex, 0);
	}
	send_trace(ctx, ep ? ep->lxc_id : 0, TRACE_TO_STACK, ctx->ifindex, CT_NEW, 1,
		   METRIC_EGRESS, NULL);
	return TC_ACT_OK;
}

/* Tunnel mode: into the VXLAN device towards the node hosting the destination. */
static __always_inline int encap_to_node(struct __sk_buff *ctx, __u16 source, __be32 node_ip,
					 const struct ipv4_flow *flow, __u8 ct_status, int report)
{
	/* Only cluster identities fit the VNI and mean the same on the other node. */
	if (flow->src_identity > TUNNEL_ID_MAX)
		return send_drop(ctx, source, DROP_INVALID_IDENTITY, METRIC_EGRESS, flow);
	if (encap_set_key(ctx, node_ip, flow->src_identity) < 0)
		return send_drop(ctx, source, DROP_NO_TUNNEL_ENDPOINT, METRIC_EGRESS, flow);
	send_trace(ctx, source, TRACE_TO_OVERLAY, tunnel_ifindex, ct_status, report, METRIC_EGRESS,
		   flow);
	return bpf_redirect(tunnel_ifindex, 0);
}

SEC("tc")
int from_container(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = ctx->ifindex;
	struct endpoint_info *ep = bpf_map_lookup_elem(&pylium_lxc_if, &ifindex);
	__u16 source = ep ? ep->lxc_id : 0;
	struct endpoint_key dst_key;
	struct endpoint_info *dst;
	const struct ipcache_value *remote;
	struct ipv4_flow flow;
	__u8 ct_status;
	int report;

	if ((void *)(eth + 1) > data_end)
		return send_drop(ctx, source, DROP_INVALID, METRIC_EGRESS, NULL);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return handle_arp(ctx, ep);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return send_drop(ctx, source, DROP_UNKNOWN_L3, METRIC_EGRESS, NULL);
	if (ipv4_parse(ctx, &flow) < 0)
		return send_drop(ctx, source, DROP_INVALID, METRIC_EGRESS, NULL);
	/* Anti-spoofing: a pod may only send from its own address. */
	if (!ep || flow.saddr != ep->ip4)
		return send_drop(ctx, source, DROP_INVALID_SIP, METRIC_EGRESS, &flow);
	flow.src_identity = ep->sec_identity;
	remote = ipcache_lookup4(flow.daddr);
	if (remote)
		flow.dst_identity = remote->sec_identity;
	dst_key.ip4 = flow.daddr;
	dst = bpf_map_lookup_elem(&pylium_lxc, &dst_key);
	if (dst)
		flow.dst_identity = dst->sec_identity;
	if (ct4_process(ctx, &flow, TUPLE_F_OUT, &ct_status, &report) < 0)
		return send_drop(ctx, source, DROP_CT_CREATE_FAILED, METRIC_EGRESS, &flow);
	/* Egress policy decides new connections; a dropped one leaves no conntrack entry. */
	if (ct_status == CT_NEW) {
		int denied = policy_check(ctx, source, flow.dst_identity, METRIC_EGRESS, &flow);

		if (denied) {
			ct4_forget(&flow, TUPLE_F_OUT);
			return send_drop(ctx, source, denied, METRIC_EGRESS, &flow);
		}
	}

	if (dst) {
		__u32 target = dst->ifindex;

		/* Route: TTL down, MACs as if the node forwarded it, then straight to the peer's
		 * host-side veth egress. */
		if (ipv4_dec_ttl(ctx) < 0 || eth_store_addrs(ctx, dst->node_mac, dst->mac) < 0)
			return send_drop(ctx, source, DROP_INVALID, METRIC_EGRESS, &flow);
		set_identity_mark(ctx, flow.src_identity);
		send_trace(ctx, source, TRACE_TO_LXC, target, ct_status, report, METRIC_EGRESS,
			   &flow);
		return bpf_redirect(target, 0);
	}
	if (flow.daddr != router_ip && ipv4_in_prefix(flow.daddr, pod_cidr_addr, pod_cidr_mask))
		return send_drop(ctx, source, DROP_NO_LXC, METRIC_EGRESS, &flow);
	if (tunnel_ifindex && remote && (remote->flags & IPCACHE_FLAG_HAS_TUNNEL_EP) &&
	    !(remote->flags & IPCACHE_FLAG_SKIP_TUNNEL))
		return encap_to_node(ctx, source, remote->tunnel_endpoint, &flow, ct_status, report);

	send_trace(ctx, source, TRACE_TO_STACK, ifindex, ct_status, report, METRIC_EGRESS, &flow);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";

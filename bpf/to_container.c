/* to-container: tc egress (tcx) of a pod's host-side veth, i.e. every packet delivered to the
 * pod, whether redirected by a local from-container or routed by the host stack.
 *
 * Path: identify the endpoint by the device ifindex; pass ARP; drop what is not IPv4 or not
 * addressed to the endpoint; track the connection (ingress scope, so replies to the pod's own
 * connections are recognised); decide a new connection with the endpoint's ingress policy
 * (lib/policy.h, peer = the source identity); count and deliver.
 *
 * The source identity comes from the mark when the overlay (from the VNI) or a local
 * from-container set it, else from the ipcache (native routing, the host stack).
 */
#include "common.h"
#include "lib/ct.h"
#include "lib/encap.h"
#include "lib/ipcache.h"
#include "lib/ipv4.h"
#include "lib/policy.h"
#include "lib/verdict.h"

SEC("tc")
int to_container(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = ctx->ifindex;
	struct endpoint_info *ep = bpf_map_lookup_elem(&pylium_lxc_if, &ifindex);
	struct ipv4_flow flow;
	__u32 src_identity = take_identity_mark(ctx);
	__u8 ct_status;
	int report;

	/* Not an endpoint device (yet): nothing to enforce. */
	if (!ep)
		return TC_ACT_OK;
	if ((void *)(eth + 1) > data_end)
		return send_drop(ctx, ep->lxc_id, DROP_INVALID, METRIC_INGRESS, NULL);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return send_drop(ctx, ep->lxc_id, DROP_UNKNOWN_L3, METRIC_INGRESS, NULL);
	if (ipv4_parse(ctx, &flow) < 0)
		return send_drop(ctx, ep->lxc_id, DROP_INVALID, METRIC_INGRESS, NULL);
	flow.src_identity = src_identity ? src_identity : ipcache_identity4(flow.saddr);
	flow.dst_identity = ep->sec_identity;
	if (flow.daddr != ep->ip4)
		return send_drop(ctx, ep->lxc_id, DROP_NO_LXC, METRIC_INGRESS, &flow);
	if (ct4_process(ctx, &flow, TUPLE_F_IN, &ct_status, &report) < 0)
		return send_drop(ctx, ep->lxc_id, DROP_CT_CREATE_FAILED, METRIC_INGRESS, &flow);
	/* Ingress policy decides new connections; a dropped one leaves no conntrack entry. */
	if (ct_status == CT_NEW) {
		int denied = policy_check(ctx, ep->lxc_id, flow.src_identity, METRIC_INGRESS, &flow);

		if (denied) {
			ct4_forget(&flow, TUPLE_F_IN);
			return send_drop(ctx, ep->lxc_id, denied, METRIC_INGRESS, &flow);
		}
	}

	send_trace(ctx, ep->lxc_id, TRACE_TO_LXC, ifindex, ct_status, report, METRIC_INGRESS,
		   &flow);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";

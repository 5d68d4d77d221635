/* from-netdev: tcx ingress of the node's uplink, i.e. every packet the node receives.
 *
 * Path: a packet to the node IP that answers a masqueraded flow (its tuple is an ingress key of
 * pylium_snat_v4_external) gets its destination address and port translated back to the pod's;
 * the stack then routes it to the pod's /32 route, i.e. its lxc veth, where to-container sees
 * it. Anything else (the node's own traffic, traffic to pods from other nodes) passes untouched.
 */
#include "common.h"
#include "lib/ipv4.h"
#include "lib/nat.h"
#include "lib/verdict.h"

SEC("tc")
int from_netdev(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv4_flow flow;
	int ret;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (!nat_node_ip || ipv4_parse(ctx, &flow) < 0)
		return TC_ACT_OK;
	ret = snat_v4_ingress(ctx, &flow);
	if (ret < 0)
		return send_drop(ctx, 0, -ret, METRIC_INGRESS, &flow);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";

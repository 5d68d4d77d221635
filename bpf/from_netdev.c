/* from-netdev: tcx ingress of the node's uplink, i.e. every packet the node receives.
 *
 * Path: a packet to the node IP that answers a source-NATed flow (its tuple is an ingress key
 * of pylium_snat_v4_external) gets its destination address and port translated back: to the
 * pod's (masquerade; the stack then routes it to the pod's /32 route, i.e. its lxc veth, where
 * to-container sees it), or to the outside client's when it answers a load-balanced flow,
 * whose source then becomes the frontend again and which leaves by the uplink (lib/nodeport.h).
 * A packet from outside to a NodePort, LoadBalancer IP or externalIP is load-balanced
 * (lib/nodeport.h). Anything else (the node's own traffic, traffic to pods from other nodes)
 * passes untouched.
 */
#include "common.h"
#include "lib/ipv4.h"
#include "lib/nat.h"
#include "lib/nodeport.h"
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
	if (ret > 0) {
		if (!enable_node_port && !enable_external_ips)
			return TC_ACT_OK;
		if (ipv4_parse(ctx, &flow) < 0)
			return send_drop(ctx, 0, DROP_INVALID, METRIC_INGRESS, NULL);
		ret = nodeport_rev_dnat(ctx, &flow);
		if (ret < 0)
			return send_drop(ctx, 0, -ret, METRIC_INGRESS, &flow);
		if (ret == 0)
			return TC_ACT_OK; /* a masqueraded pod's reply */
		/* From the frontend (a node address) now: back out where the client is. */
		return bpf_redirect_neigh(ctx->ifindex, NULL, 0, 0);
	}
	if (!enable_node_port && !enable_external_ips)
		return TC_ACT_OK;
	ret = nodeport_lb4(ctx, &flow);
	if (ret < 0)
		return send_drop(ctx, 0, -ret, METRIC_INGRESS, &flow);
	return ret;
}

char _license[] SEC("license") = "GPL";

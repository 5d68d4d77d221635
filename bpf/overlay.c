/* from-overlay: tcx ingress of the node's VXLAN device (tunnel routing), i.e. every packet
 * another node tunnelled here, already decapsulated.
 *
 * Path: the VNI is the source's security identity (from-container on the sending node put it
 * there); a destination that is a local endpoint gets the router hop (TTL, MACs) and is
 * redirected to its host-side veth egress with the identity in the mark, where to-container
 * reports and delivers it. Anything else (the router IP, node addresses) goes to the stack.
 */
#include <linux/if_packet.h>
#include "common.h"
#include "lib/encap.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/verdict.h"

SEC("tc")
int from_overlay(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct bpf_tunnel_key key = {};
	struct endpoint_key dst_key;
	struct endpoint_info *dst;
	struct ipv4_flow flow;

	if ((void *)(eth + 1) > data_end)
		return send_drop(ctx, 0, DROP_INVALID, METRIC_INGRESS, NULL);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return send_drop(ctx, 0, DROP_UNKNOWN_L3, METRIC_INGRESS, NULL);
	if (ipv4_parse(ctx, &flow) < 0)
		return send_drop(ctx, 0, DROP_INVALID, METRIC_INGRESS, NULL);
	if (bpf_skb_get_tunnel_key(ctx, &key, sizeof(key), 0) < 0)
		return send_drop(ctx, 0, DROP_NO_TUNNEL_ENDPOINT, METRIC_INGRESS, &flow);
	flow.src_identity = key.tunnel_id;

	dst_key.ip4 = flow.daddr;
	dst = bpf_map_lookup_elem(&pylium_lxc, &dst_key);
	if (!dst) {
		/* The inner destination MAC is the sender's gateway, not this device's. */
		bpf_skb_change_type(ctx, PACKET_HOST);
		return TC_ACT_OK;
	}
	if (ipv4_dec_ttl(ctx) < 0 || eth_store_addrs(ctx, dst->node_mac, dst->mac) < 0)
		return send_drop(ctx, dst->lxc_id, DROP_INVALID, METRIC_INGRESS, &flow);
	set_identity_mark(ctx, flow.src_identity);
	return bpf_redirect(dst->ifindex, 0);
}

char _license[] SEC("license") = "GPL";

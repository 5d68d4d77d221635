/* The node's VXLAN device (tunnel routing).
 *
 * from-overlay: tcx ingress, i.e. every packet another node tunnelled here, decapsulated.
 * Path: the VNI is the source's security identity (from-container on the sending node put it
 * there); a destination that is a local endpoint gets the router hop (TTL, MACs) and is
 * redirected to its host-side veth egress with the identity in the mark, where to-container
 * reports and delivers it. Anything else (the router IP, node addresses) goes to the stack.
 * The host identity never arrives from another node (senders present it as remote-node).
 *
 * to-overlay: tcx egress, for what the node's own stack routes into the device (its routes to
 * the other nodes' pod CIDRs): the tunnel key from the ipcache, the source presented as
 * remote-node, as Cilium does. Packets from-container redirected here carry their key already.
 */
#include <linux/if_packet.h>
#include "common.h"
#include "lib/encap.h"
#include "lib/eth.h"
#include "lib/ipcache.h"
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
	if (flow.src_identity == IDENTITY_HOST)
		return send_drop(ctx, 0, DROP_INVALID_IDENTITY, METRIC_INGRESS, &flow);

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

SEC("tc")
int to_overlay(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct bpf_tunnel_key key = {};
	const struct ipcache_value *remote;
	struct ipv4_flow flow;

	if (bpf_skb_get_tunnel_key(ctx, &key, sizeof(key), 0) == 0)
		return TC_ACT_OK; /* from-container encapsulated it */
	if ((void *)(eth + 1) > data_end)
		return send_drop(ctx, 0, DROP_INVALID, METRIC_EGRESS, NULL);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return send_drop(ctx, 0, DROP_UNKNOWN_L3, METRIC_EGRESS, NULL);
	if (ipv4_parse(ctx, &flow) < 0)
		return send_drop(ctx, 0, DROP_INVALID, METRIC_EGRESS, NULL);
	flow.src_identity = IDENTITY_REMOTE_NODE;
	remote = ipcache_lookup4(flow.daddr);
	if (!remote || !(remote->flags & IPCACHE_FLAG_HAS_TUNNEL_EP))
		return send_drop(ctx, 0, DROP_NO_TUNNEL_ENDPOINT, METRIC_EGRESS, &flow);
	flow.dst_identity = remote->sec_identity;
	if (encap_set_key(ctx, remote->tunnel_endpoint, IDENTITY_REMOTE_NODE) < 0)
		return send_drop(ctx, 0, DROP_NO_TUNNEL_ENDPOINT, METRIC_EGRESS, &flow);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";

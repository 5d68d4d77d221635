/* ARP responder for the router IP: pods resolve their gateway without any kernel trick in the
 * pod (no proxy ARP, no static neighbour); the host-side veth's MAC answers. */
#pragma once

#include <linux/if_ether.h>
#include <linux/if_arp.h>
#include "common.h"
#include "eth.h"

/* ARP for IPv4 over Ethernet, as on the wire. */
struct arp_eth {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	__u8 ar_sha[ETH_ALEN];
	__be32 ar_sip;
	__u8 ar_tha[ETH_ALEN];
	__be32 ar_tip;
} __attribute__((packed));

/* Is this an ARP request for `target`? Fills *req when it is. */
static __always_inline int arp_is_request_for(struct __sk_buff *ctx, __be32 target,
					      struct arp_eth *req)
{
	if (bpf_skb_load_bytes(ctx, sizeof(struct ethhdr), req, sizeof(*req)) < 0)
		return 0;
	return req->ar_hrd == bpf_htons(ARPHRD_ETHER) && req->ar_pro == bpf_htons(ETH_P_IP) &&
	       req->ar_hln == ETH_ALEN && req->ar_pln == 4 &&
	       req->ar_op == bpf_htons(ARPOP_REQUEST) && req->ar_tip == target;
}

/* Turn the request in place into the reply "`ip` is at `mac`", addressed to the requester. */
static __always_inline int arp_make_reply(struct __sk_buff *ctx, const struct arp_eth *req,
					  const __u8 *mac, __be32 ip)
{
	struct arp_eth reply = *req;

	reply.ar_op = bpf_htons(ARPOP_REPLY);
	eth_copy_addr(reply.ar_sha, mac);
	reply.ar_sip = ip;
	eth_copy_addr(reply.ar_tha, req->ar_sha);
	reply.ar_tip = req->ar_sip;
	if (bpf_skb_store_bytes(ctx, sizeof(struct ethhdr), &reply, sizeof(reply), 0) < 0)
		return -1;
	return eth_store_addrs(ctx, mac, req->ar_sha);
}

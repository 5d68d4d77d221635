/* Ethernet helpers. */
#pragma once

#include <linux/if_ether.h>
#include "common.h"

static __always_inline void eth_copy_addr(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, ETH_ALEN);
}

/* Rewrite source and destination MAC, as a router does when it forwards. */
static __always_inline int eth_store_addrs(struct __sk_buff *ctx, const __u8 *src, const __u8 *dst)
{
	if (bpf_skb_store_bytes(ctx, offsetof(struct ethhdr, h_dest), dst, ETH_ALEN, 0) < 0)
		return -1;
	return bpf_skb_store_bytes(ctx, offsetof(struct ethhdr, h_source), src, ETH_ALEN, 0);
}

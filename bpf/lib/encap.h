/* VXLAN encapsulation (tunnel routing) and the source identity riding with a packet.
 *
 * Encap: the VNI carries the source pod's security identity, so the receiving node knows it
 * without a lookup (Cilium's tunnel_id = seclabel). Inside a node, from the overlay or a
 * local from-container to to-container, the identity rides in skb->mark in Cilium's layout:
 * MARK_MAGIC_IDENTITY in bits 8-11, identity bits 0-15 in 16-31 and bits 16-23 in 0-7.
 */
#pragma once

#include "common.h"

/* Reserved identities (Cilium's numbers, pylium.identity.numeric). */
#define IDENTITY_HOST 1
#define IDENTITY_REMOTE_NODE 6

#define MARK_MAGIC_HOST_MASK 0x0F00
#define MARK_MAGIC_IDENTITY 0x0F00

/* Identities above this never go on the wire: the VNI has 24 bits, and identities with the
 * local-scope bit (1 << 24, CIDR identities) are meaningful only on their own node. */
#define TUNNEL_ID_MAX 0xFFFFFF

static __always_inline void set_identity_mark(struct __sk_buff *ctx, __u32 identity)
{
	ctx->mark = ((identity & 0xFFFF) << 16) | MARK_MAGIC_IDENTITY | ((identity >> 16) & 0xFF);
}

/* The identity a previous program stored in the mark, clearing it; 0 when none. */
static __always_inline __u32 take_identity_mark(struct __sk_buff *ctx)
{
	__u32 mark = ctx->mark;

	if ((mark & MARK_MAGIC_HOST_MASK) != MARK_MAGIC_IDENTITY)
		return 0;
	ctx->mark = 0;
	return (mark >> 16) | ((mark & 0xFF) << 16);
}

/* Set the tunnel key for the VXLAN device: remote node = `remote` (network order), VNI =
 * `identity`. Returns 0 or a negative error. */
static __always_inline int encap_set_key(struct __sk_buff *ctx, __be32 remote, __u32 identity)
{
	struct bpf_tunnel_key key = {};

	key.remote_ipv4 = bpf_ntohl(remote);
	key.tunnel_id = identity;
	key.tunnel_ttl = 64;
	return bpf_skb_set_tunnel_key(ctx, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

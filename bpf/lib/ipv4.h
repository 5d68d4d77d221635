/* IPv4 and L4 header parsing into a flow tuple, and TTL decrement on forward. */
#pragma once

#include <stddef.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/in.h>
#include "common.h"
#include "drop.h"

/* The parsed facts of one IPv4 packet. Ports are 0 for protocols without them; for ICMP echo
 * both carry the identifier so a request and its reply share a conntrack tuple. */
struct ipv4_flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* the TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 ACK=0x10) */
	/* Security identities of both ends, as far as the reporting program knows them
	 * (0 = unknown); events carry them. */
	__u32 src_identity;
	__u32 dst_identity;
	/* Set by the policy check of a new connection (lib/policy.h); events carry them. */
	__u32 policy_cookie;   /* names the deciding rules, 0 = none */
	__u8 policy_verdict;   /* POLICY_VERDICT_* */
	__u8 icmp_type;	       /* ICMP: the message type (policy keys match it), else 0 */
};

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* Parse the IPv4 header after Ethernet; returns 0, or -1 for a truncated or invalid header. */
static __always_inline int ipv4_parse(struct __sk_buff *ctx, struct ipv4_flow *flow)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u32 l4_off;

	if ((void *)(ip + 1) > data_end || ip->ihl < 5 || ip->version != 4)
		return -1;
	flow->saddr = ip->saddr;
	flow->daddr = ip->daddr;
	flow->proto = ip->protocol;
	flow->sport = 0;
	flow->dport = 0;
	flow->tcp_flags = 0;
	flow->src_identity = 0;
	flow->dst_identity = 0;
	flow->policy_cookie = 0;
	flow->policy_verdict = POLICY_VERDICT_NONE;
	flow->icmp_type = 0;
	/* Non-first fragments carry no L4 header: track them by addresses alone. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return 0;
	l4_off = sizeof(struct ethhdr) + ip->ihl * 4;

	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr tcp;

		if (bpf_skb_load_bytes(ctx, l4_off, &tcp, sizeof(tcp)) < 0)
			return -1;
		flow->sport = tcp.source;
		flow->dport = tcp.dest;
		flow->tcp_flags = ((__u8 *)&tcp)[13];
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr udp;

		if (bpf_skb_load_bytes(ctx, l4_off, &udp, sizeof(udp)) < 0)
			return -1;
		flow->sport = udp.source;
		flow->dport = udp.dest;
		break;
	}
	case IPPROTO_ICMP: {
		struct icmphdr icmp;

		if (bpf_skb_load_bytes(ctx, l4_off, &icmp, sizeof(icmp)) < 0)
			return -1;
		flow->icmp_type = icmp.type;
		if (icmp.type == ICMP_ECHO || icmp.type == ICMP_ECHOREPLY) {
			flow->sport = icmp.un.echo.id;
			flow->dport = icmp.un.echo.id;
		}
		break;
	}
	}
	return 0;
}

/* Decrement the TTL and fix the header checksum, as a router hop must. */
static __always_inline int ipv4_dec_ttl(struct __sk_buff *ctx)
{
	__u32 off = sizeof(struct ethhdr) + offsetof(struct iphdr, ttl);
	__u8 ttl;
	__u16 old_word, new_word;

	if (bpf_skb_load_bytes(ctx, off, &ttl, 1) < 0 || ttl <= 1)
		return -1;
	/* TTL and protocol share one 16-bit word of the checksum. */
	old_word = bpf_htons((__u16)ttl << 8);
	new_word = bpf_htons((__u16)(ttl - 1) << 8);
	ttl--;
	if (bpf_l3_csum_replace(ctx, sizeof(struct ethhdr) + offsetof(struct iphdr, check),
				old_word, new_word, 2) < 0)
		return -1;
	return bpf_skb_store_bytes(ctx, off, &ttl, 1, 0);
}

static __always_inline int ipv4_in_prefix(__be32 addr, __be32 net, __be32 mask)
{
	return mask && (addr & mask) == net;
}

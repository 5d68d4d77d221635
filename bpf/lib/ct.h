/* Connection tracking in an LRU hash, in Cilium's shape.
 *
 * Each program tracks in its own scope: from-container (egress, TUPLE_F_OUT) and to-container
 * (ingress, TUPLE_F_IN) create entries keyed by the packet's tuple plus that flag. A packet
 * whose own tuple is unknown but whose reversed tuple exists in the other scope is a reply:
 * A->B creates (A,B,OUT) at A and (A,B,IN) at B; B's answer finds (A,B,IN) at B and
 * (A,B,OUT) at A. Expired entries are removed from user space (datapath/conntrack.py).
 */
#pragma once

#include "common.h"
#include "ipv4.h"

#define TUPLE_F_OUT 0
#define TUPLE_F_IN 1

/* Conntrack status of a packet (Cilium's CT_*; also the trace event reason). */
#define CT_NEW 0
#define CT_ESTABLISHED 1
#define CT_REPLY 2

/* ct_entry.flags */
#define CT_F_TX_CLOSING 0x01 /* FIN sent by the originator */
#define CT_F_RX_CLOSING 0x02 /* FIN sent by the replier */
#define CT_F_SEEN_REPLY 0x04 /* the other side answered: established */
#define CT_F_SEEN_NON_SYN 0x08 /* created from a TCP packet that was not a SYN */
#define CT_F_RESET 0x10	     /* RST seen in either direction */

struct ct4_tuple {
	__be32 daddr;
	__be32 saddr;
	__be16 dport;
	__be16 sport;
	__u8 nexthdr;
	__u8 flags; /* TUPLE_F_OUT or TUPLE_F_IN */
	__u16 pad;
};

struct ct_entry {
	__u64 tx_packets; /* originator to replier */
	__u64 tx_bytes;
	__u64 rx_packets; /* replies */
	__u64 rx_bytes;
	__u32 lifetime;	      /* expiry, seconds of CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u16 flags;	      /* CT_F_* */
	__u8 tx_flags_seen;   /* TCP flags seen from the originator */
	__u8 rx_flags_seen;   /* TCP flags seen from the replier */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_tuple);
	__type(value, struct ct_entry);
	__uint(max_entries, 65536);
} pylium_ct4_global SEC(".maps");

static __always_inline __u32 ct_now(void)
{
	return (__u32)(bpf_ktime_get_ns() / 1000000000ULL);
}

static __always_inline __u32 ct_lifetime(const struct ct_entry *entry, __u8 proto)
{
	if (proto != IPPROTO_TCP)
		return ct_lifetime_nontcp;
	if ((entry->flags & CT_F_RESET) ||
	    (entry->flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING)) ==
		    (CT_F_TX_CLOSING | CT_F_RX_CLOSING))
		return ct_close_timeout;
	if (entry->flags & CT_F_SEEN_REPLY)
		return ct_lifetime_tcp;
	return ct_syn_timeout;
}

/* Fold one packet's TCP flags into the entry's state. */
static __always_inline void ct_update_tcp(struct ct_entry *entry, __u8 tcp_flags, int reply)
{
	if (tcp_flags & TCP_FLAG_RST)
		entry->flags |= CT_F_RESET;
	if (tcp_flags & TCP_FLAG_FIN)
		entry->flags |= reply ? CT_F_RX_CLOSING : CT_F_TX_CLOSING;
}

/* The entry of the connection the packet answers: its reversed tuple in the scope other than
 * `dir`, or NULL. */
static __always_inline struct ct_entry *ct4_lookup_reply(const struct ipv4_flow *flow, __u8 dir)
{
	struct ct4_tuple tuple = {
		.daddr = flow->saddr,
		.saddr = flow->daddr,
		.dport = flow->sport,
		.sport = flow->dport,
		.nexthdr = flow->proto,
		.flags = dir ^ TUPLE_F_IN,
	};

	return bpf_map_lookup_elem(&pylium_ct4_global, &tuple);
}

/* Look the packet up in scope `dir` (TUPLE_F_OUT/IN), create an entry for a new connection,
 * refresh the lifetime. Sets *status (CT_*) and *report (new connection or TCP flags seen for
 * the first time in this direction). Returns 0, or -1 when a new entry could not be stored. */
static __always_inline int ct4_process(struct __sk_buff *ctx, const struct ipv4_flow *flow,
				       __u8 dir, __u8 *status, int *report)
{
	struct ct4_tuple tuple = {
		.daddr = flow->daddr,
		.saddr = flow->saddr,
		.dport = flow->dport,
		.sport = flow->sport,
		.nexthdr = flow->proto,
		.flags = dir,
	};
	struct ct_entry *entry;
	__u32 now = ct_now();

	entry = bpf_map_lookup_elem(&pylium_ct4_global, &tuple);
	if (entry) {
		*status = CT_ESTABLISHED;
		*report = (entry->tx_flags_seen | flow->tcp_flags) != entry->tx_flags_seen;
		__sync_fetch_and_add(&entry->tx_packets, 1);
		__sync_fetch_and_add(&entry->tx_bytes, ctx->len);
		entry->tx_flags_seen |= flow->tcp_flags;
		if (flow->proto == IPPROTO_TCP)
			ct_update_tcp(entry, flow->tcp_flags, 0);
		entry->lifetime = now + ct_lifetime(entry, flow->proto);
		return 0;
	}

	entry = ct4_lookup_reply(flow, dir);
	if (entry) {
		*status = CT_REPLY;
		*report = (entry->rx_flags_seen | flow->tcp_flags) != entry->rx_flags_seen ||
			  !(entry->flags & CT_F_SEEN_REPLY);
		__sync_fetch_and_add(&entry->rx_packets, 1);
		__sync_fetch_and_add(&entry->rx_bytes, ctx->len);
		entry->rx_flags_seen |= flow->tcp_flags;
		entry->flags |= CT_F_SEEN_REPLY;
		if (flow->proto == IPPROTO_TCP)
			ct_update_tcp(entry, flow->tcp_flags, 1);
		entry->lifetime = now + ct_lifetime(entry, flow->proto);
		return 0;
	}

	/* New connection: store it in this program's scope. */
	struct ct_entry fresh = {
		.tx_packets = 1,
		.tx_bytes = ctx->len,
		.tx_flags_seen = flow->tcp_flags,
	};

	if (flow->proto == IPPROTO_TCP) {
		if (!(flow->tcp_flags & TCP_FLAG_SYN))
			fresh.flags |= CT_F_SEEN_NON_SYN;
		ct_update_tcp(&fresh, flow->tcp_flags, 0);
	}
	fresh.lifetime = now + ct_lifetime(&fresh, flow->proto);
	*status = CT_NEW;
	*report = 1;
	return bpf_map_update_elem(&pylium_ct4_global, &tuple, &fresh, BPF_ANY) < 0 ? -1 : 0;
}

/* Remove the entry a new connection created in scope `dir` (its first packet was dropped, so
 * its next packets must be decided again, not pass as established). */
static __always_inline void ct4_forget(const struct ipv4_flow *flow, __u8 dir)
{
	struct ct4_tuple tuple = {
		.daddr = flow->daddr,
		.saddr = flow->saddr,
		.dport = flow->dport,
		.sport = flow->sport,
		.nexthdr = flow->proto,
		.flags = dir,
	};

	bpf_map_delete_elem(&pylium_ct4_global, &tuple);
}

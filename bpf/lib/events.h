/* Trace and drop events into a ring buffer, read by the agent (datapath/events.py). */
#pragma once

#include "common.h"
#include "ipv4.h"
#include "drop.h"

struct pylium_event {
	__u8 type;	  /* NOTIFY_DROP, NOTIFY_TRACE or NOTIFY_TRACE_SOCK */
	__u8 subtype;	  /* drop: reason code; trace: observation point (TRACE_*);
			   * trace-sock: translation point (XLATE_*) */
	__u16 source;	  /* lxc id of the endpoint whose program reports; trace-sock: the
			   * service's rev_nat_index */
	__u32 orig_len;	  /* packet length */
	__u32 ifindex;	  /* trace: where the packet goes (redirect target or arrival device) */
	__u8 reason;	  /* trace: conntrack status (CT_NEW, CT_ESTABLISHED, CT_REPLY) */
	__u8 proto;
	__u8 dir;	  /* METRIC_INGRESS or METRIC_EGRESS */
	__u8 tcp_flags;	  /* the TCP flags byte, 0 for other protocols */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 src_identity; /* security identity of the source, 0 = unknown */
	__u32 dst_identity; /* security identity of the destination, 0 = unknown */
	__u32 policy_cookie; /* the deciding policy entry's cookie, 0 = none */
	__u8 policy_verdict; /* POLICY_VERDICT_* */
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} pylium_events SEC(".maps");

/* Events the full ring buffer refused, per CPU (the agent reports them as Hubble's
 * PERF_EVENT_RING_BUFFER lost events): a loss is never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} pylium_events_lost SEC(".maps");

static __always_inline void events_output(struct pylium_event *ev)
{
	__u32 zero = 0;
	__u64 *lost;

	/* A full ring (nobody reading) loses the event, never the packet; it is counted. */
	if (!bpf_ringbuf_output(&pylium_events, ev, sizeof(*ev), 0))
		return;
	lost = bpf_map_lookup_elem(&pylium_events_lost, &zero);
	if (lost)
		*lost += 1;
}

static __always_inline void emit_event(struct __sk_buff *ctx, __u8 type, __u8 subtype,
				       __u16 source, __u32 ifindex, __u8 reason, __u8 dir,
				       const struct ipv4_flow *flow)
{
	struct pylium_event ev = {
		.type = type,
		.subtype = subtype,
		.source = source,
		.orig_len = ctx->len,
		.ifindex = ifindex,
		.reason = reason,
		.dir = dir,
	};

	if (flow) {
		ev.proto = flow->proto;
		ev.saddr = flow->saddr;
		ev.daddr = flow->daddr;
		ev.sport = flow->sport;
		ev.dport = flow->dport;
		ev.tcp_flags = flow->tcp_flags;
		ev.src_identity = flow->src_identity;
		ev.dst_identity = flow->dst_identity;
		ev.policy_cookie = flow->policy_cookie;
		ev.policy_verdict = flow->policy_verdict;
	}
	events_output(&ev);
}

/* Socket LB translation points (Cilium's enum xlate_point). */
#define XLATE_PRE_DIRECTION_FWD 1  /* the service address the socket asked for */
#define XLATE_POST_DIRECTION_FWD 2 /* the backend it got instead */

/* A trace-sock event: a connect()/sendmsg() to `addr:port` translated at `point`. There is no
 * packet, so no length or device; the source is what the socket knows (0 before bind). */
static __always_inline void emit_sock_event(__u8 point, __u16 rev_nat_index, __u8 proto,
					    __be32 saddr, __be32 addr, __be16 port)
{
	struct pylium_event ev = {
		.type = NOTIFY_TRACE_SOCK,
		.subtype = point,
		.source = rev_nat_index,
		.proto = proto,
		.dir = METRIC_EGRESS,
		.saddr = saddr,
		.daddr = addr,
		.dport = port,
	};

	events_output(&ev);
}

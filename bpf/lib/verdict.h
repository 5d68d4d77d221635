/* The two ends of every packet's path: drop (one function for all drops, with a reason) and
 * forward (counted, traced). Both update pylium_metrics and report to pylium_events. */
#pragma once

#include "common.h"
#include "drop.h"
#include "events.h"
#include "metrics.h"

/* Drop with a reason: count it, report it, return TC_ACT_SHOT. */
static __always_inline int send_drop(struct __sk_buff *ctx, __u16 source, __u8 reason, __u8 dir,
				     const struct ipv4_flow *flow)
{
	update_metrics(ctx->len, dir, reason);
	emit_event(ctx, NOTIFY_DROP, reason, source, ctx->ifindex, 0, dir, flow);
	return TC_ACT_SHOT;
}

/* Count a forwarded packet and, unless aggregated away, report where it goes. */
static __always_inline void send_trace(struct __sk_buff *ctx, __u16 source, __u8 obs_point,
				       __u32 ifindex, __u8 ct_status, int report, __u8 dir,
				       const struct ipv4_flow *flow)
{
	update_metrics(ctx->len, dir, REASON_FORWARDED);
	if (trace_events && (report || !monitor_aggregation))
		emit_event(ctx, NOTIFY_TRACE, obs_point, source, ifindex, ct_status, dir, flow);
}

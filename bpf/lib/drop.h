/* Drop reasons and trace observation points, with Cilium's numbers (bpf/lib/common.h,
 * pkg/monitor/api/drop.go), so tools that know Cilium's codes read ours. Values are the
 * positive reason codes carried in events and metrics. */
#pragma once

#define REASON_FORWARDED 0
#define DROP_INVALID_SIP 132	   /* "Invalid source ip" */
#define DROP_POLICY 133		   /* "Policy denied": nothing allowed it */
#define DROP_INVALID 134	   /* "Invalid packet" */
#define DROP_UNKNOWN_L3 139	   /* "Unsupported L3 protocol" */
#define DROP_NO_LXC 152		   /* "No matching local container found" */
#define DROP_CT_CREATE_FAILED 155  /* "CT: Map insertion failed" */
#define DROP_NO_TUNNEL_ENDPOINT 160 /* "No tunnel/encapsulation endpoint (datapath BUG!)" */
#define DROP_INVALID_IDENTITY 171  /* "Invalid identity" */
#define DROP_POLICY_DENY 181	   /* "Policy denied by denylist": a deny rule */

/* Policy verdict of a new connection, carried in its event (lib/policy.h). */
#define POLICY_VERDICT_NONE 0	 /* not looked up: direction not enforced or not a new connection */
#define POLICY_VERDICT_ALLOWED 1
#define POLICY_VERDICT_DENIED 2
#define POLICY_VERDICT_AUDIT 3	 /* would have been denied; passed in audit mode */

/* Notification types (Cilium's CILIUM_NOTIFY_*). */
#define NOTIFY_DROP 1
#define NOTIFY_TRACE 4
#define NOTIFY_TRACE_SOCK 7 /* socket LB translation (Cilium's MessageTypeTraceSock) */

/* Trace observation points (Cilium's TRACE_*). */
#define TRACE_TO_LXC 0
#define TRACE_TO_STACK 3
#define TRACE_TO_OVERLAY 4
#define TRACE_FROM_OVERLAY 9

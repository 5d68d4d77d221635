/* Per-CPU packet and byte counters by reason (0 = forwarded, else a drop reason) and
 * direction, as Cilium's metrics map. User space sums the per-CPU values. */
#pragma once

#include "common.h"

struct metrics_key {
	__u8 reason;
	__u8 dir; /* METRIC_INGRESS or METRIC_EGRESS */
	__u8 pad[6];
};

struct metrics_value {
	__u64 count;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, 1024);
} pylium_metrics SEC(".maps");

static __always_inline void update_metrics(__u32 bytes, __u8 dir, __u8 reason)
{
	struct metrics_key key = { .reason = reason, .dir = dir };
	struct metrics_value *value = bpf_map_lookup_elem(&pylium_metrics, &key);

	if (value) {
		/* Per-CPU: no other writer, no atomics needed. */
		value->count += 1;
		value->bytes += bytes;
	} else {
		struct metrics_value fresh = { .count = 1, .bytes = bytes };

		bpf_map_update_elem(&pylium_metrics, &key, &fresh, BPF_ANY);
	}
}

/* Minimal XDP and cgroup connect4 programs for the attach tests: each counts what it sees
 * in an array map and lets it through. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} hook_counts SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *value = bpf_map_lookup_elem(&hook_counts, &slot);

	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
	count(0);
	return XDP_PASS;
}

SEC("cgroup/connect4")
int count_connect4(struct bpf_sock_addr *ctx)
{
	count(1);
	return 1;
}

char _license[] SEC("license") = "GPL";

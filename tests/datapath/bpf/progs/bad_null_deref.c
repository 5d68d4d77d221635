/* Deliberately rejected by the verifier: a map value is used without the NULL check. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} counts SEC(".maps");

SEC("tc")
int bad_null_deref(struct __sk_buff *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&counts, &key);

	return *value; /* may be NULL: "invalid mem access 'map_value_or_null'" */
}

char _license[] SEC("license") = "GPL";

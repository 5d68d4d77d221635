/* The IPv4 load-balancer maps, laid out exactly as src/pylium/loadbalancer/encoding.py writes
 * them (Cilium's lb4_key, lb4_service, lb4_backend, lb4_reverse_nat, lb_affinity_match), and
 * the lookups every LB hook shares. The agent (loadbalancer reconciler) owns the services,
 * backends, reverse NAT and affinity-match maps; the datapath alone writes the affinity and
 * reverse-socket LRU maps. Backend selection: lb4_select_backend() takes the Maglev table of a
 * service whose algorithm is maglev (per-packet paths, with lb4_flow_hash()) and a random slot
 * otherwise; socket LB always takes a random slot, as Cilium's bpf_sock does. */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define LB_SCOPE_EXT 0
#define LB_SCOPE_INT 1

/* lb4_service.flags (Cilium's enum svc_flags) */
#define SVC_FLAG_EXTERNAL_IP (1 << 0)
#define SVC_FLAG_NODEPORT (1 << 1)
#define SVC_FLAG_EXT_LOCAL_SCOPE (1 << 2)
#define SVC_FLAG_HOSTPORT (1 << 3)
#define SVC_FLAG_AFFINITY (1 << 4)
#define SVC_FLAG_LOADBALANCER (1 << 5)
#define SVC_FLAG_ROUTABLE (1 << 6)
#define SVC_FLAG_SOURCE_RANGE (1 << 7)
/* lb4_service.flags2 */
#define SVC_FLAG2_INT_LOCAL_SCOPE (1 << 4)
#define SVC_FLAG2_TWO_SCOPES (1 << 5)
#define SVC_FLAG2_REJECT (1 << 6) /* no backends at all: refuse rather than drop */

#define BE_STATE_ACTIVE 0

#define AFFINITY_TIMEOUT_MASK 0xFFFFFF

/* The algorithm in the top byte of slot 0's backend_id (Cilium's lb_algorithm). */
#define LB_ALG_SHIFT 24
#define LB_ALG_UNDEF 0
#define LB_ALG_RANDOM 1
#define LB_ALG_MAGLEV 2

/* Compiled-in Maglev table size M (Cilium's default); the loader resizes the inner map
 * template and LB_MAGLEV_LUT_SIZE together (datapath/lbconfig.py). */
#define LB_MAGLEV_LUT_SIZE_DEFAULT 16381

/* Set by the loader (.rodata): the node's algorithm for services that do not choose one
 * (`bpf-lb-algorithm`), the agent's Maglev table size and the cluster's flow-hash seed (the
 * same on every node, so a flow hashes alike everywhere). */
volatile const __u32 LB_ALGORITHM = LB_ALG_RANDOM;
volatile const __u32 LB_MAGLEV_LUT_SIZE = LB_MAGLEV_LUT_SIZE_DEFAULT;
volatile const __u32 LB_HASH_SEED = 0;

struct lb4_key {
	__be32 address;
	__be16 dport;
	__u16 backend_slot; /* 0: the service entry, 1..count+qcount: a backend */
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct lb4_service {
	__u32 backend_id; /* slot 0: affinity timeout | algorithm << 24 */
	__u16 count;
	__u16 rev_nat_index;
	__u8 flags;
	__u8 flags2;
	__u16 qcount;
};

struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags; /* BE_STATE_* */
	__u16 cluster_id;
	__u8 zone;
	__u8 pad;
};

struct lb4_reverse_nat {
	__be32 address;
	__be16 port;
	__u16 pad;
};

struct lb_affinity_match {
	__u32 backend_id;
	__u16 rev_nat_id;
	__u16 pad;
};

/* A client's sticky backend. Socket LB keys it by the client's netns cookie (netns = 1), the
 * per-packet path by its address (netns = 0), as Cilium's union lb4_affinity_client_id. */
struct lb4_affinity_key {
	__u64 client_id;
	__u16 rev_nat_id;
	__u8 netns;
	__u8 pad[5];
};

struct lb_affinity_val {
	__u64 last_used; /* bpf_ktime_get_ns() */
	__u32 backend_id;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_lb4_reverse_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_affinity_match);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_lb_affinity_match SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb_affinity_val);
	__uint(max_entries, 65536);
} pylium_lb4_affinity SEC(".maps");

/* Maglev: rev-NAT id -> an array with one value, the M backend ids of the service's table
 * (Cilium's cilium_lb4_maglev). The agent creates an inner map per service. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u16);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__type(key, __u32);
		__uint(value_size, sizeof(__u32) * LB_MAGLEV_LUT_SIZE_DEFAULT);
		__uint(max_entries, 1);
	});
} pylium_lb4_maglev SEC(".maps");

static __always_inline __u32 lb_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

/* Bob Jenkins' jhash_3words, as the kernel's and Cilium's jhash.h. */
static __always_inline __u32 lb_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += 0xdeadbeef + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	c ^= b;
	c -= lb_rol32(b, 14);
	a ^= c;
	a -= lb_rol32(c, 11);
	b ^= a;
	b -= lb_rol32(a, 25);
	c ^= b;
	c -= lb_rol32(b, 16);
	a ^= c;
	a -= lb_rol32(c, 4);
	b ^= a;
	b -= lb_rol32(a, 14);
	c ^= b;
	c -= lb_rol32(b, 24);
	return c;
}

/* The hash Maglev indexes with: the flow's 5-tuple (ports as on the wire) and the cluster's
 * seed, so one flow hashes alike on every node. */
static __always_inline __u32 lb4_flow_hash(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
					   __u8 proto)
{
	return lb_jhash_3words(saddr, daddr, ((__u32)dport << 16) | sport, LB_HASH_SEED + proto);
}

static __always_inline struct lb4_service *lb4_lookup_service(struct lb4_key *key, int in_cluster)
{
	struct lb4_service *svc;

	key->scope = LB_SCOPE_EXT;
	key->backend_slot = 0;
	svc = bpf_map_lookup_elem(&pylium_lb4_services, key);
	/* Traffic from inside the cluster uses the internal row of a two-scope service. */
	if (svc && in_cluster && (svc->flags2 & SVC_FLAG2_TWO_SCOPES)) {
		key->scope = LB_SCOPE_INT;
		svc = bpf_map_lookup_elem(&pylium_lb4_services, key);
	}
	return svc;
}

/* The backend id in a random active slot (1..count), 0 when there is none. */
static __always_inline __u32 lb4_select_backend_id(struct lb4_key *key, const struct lb4_service *svc)
{
	struct lb4_service *slot;

	if (!svc->count)
		return 0;
	key->backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&pylium_lb4_services, key);
	key->backend_slot = 0;
	return slot ? slot->backend_id : 0;
}

/* The backend id in the service's Maglev table at hash % M, 0 when it has none. */
static __always_inline __u32 lb4_maglev_backend_id(const struct lb4_service *svc, __u32 hash)
{
	__u16 rev_nat_id = svc->rev_nat_index;
	__u32 size = LB_MAGLEV_LUT_SIZE;
	__u32 zero = 0, index;
	__u32 *table;
	void *inner;

	inner = bpf_map_lookup_elem(&pylium_lb4_maglev, &rev_nat_id);
	if (!inner || !size)
		return 0;
	table = bpf_map_lookup_elem(inner, &zero);
	if (!table)
		return 0;
	index = hash % size;
	/* The compiler may assume index < size; the verifier must be shown it. */
	asm volatile("" : "+r"(index));
	if (index >= size)
		return 0;
	return table[index];
}

/* The backend id for a new flow of `svc`, 0 when there is none: its Maglev table when its
 * algorithm (or, if it names none, the node's) is maglev, else a random active slot. `hash`
 * is lb4_flow_hash() of the flow; `key` is the service's key (slot 0), left at slot 0. */
static __always_inline __u32 lb4_select_backend(struct lb4_key *key, const struct lb4_service *svc,
						__u32 hash)
{
	__u32 algorithm = svc->backend_id >> LB_ALG_SHIFT;
	__u32 backend_id;

	if (algorithm == LB_ALG_UNDEF)
		algorithm = LB_ALGORITHM;
	if (algorithm == LB_ALG_MAGLEV && svc->count) {
		backend_id = lb4_maglev_backend_id(svc, hash);
		if (backend_id)
			return backend_id;
		/* No table yet (the agent writes it just before the service): random. */
	}
	return lb4_select_backend_id(key, svc);
}

static __always_inline struct lb4_backend *lb4_lookup_backend(__u32 backend_id)
{
	return bpf_map_lookup_elem(&pylium_lb4_backends, &backend_id);
}

/* The sticky backend of a client, 0 if none or expired (or no longer a backend of the
 * service: the agent's affinity-match entries say which backends may serve it). */
static __always_inline __u32 lb4_affinity_backend_id(const struct lb4_service *svc,
						     struct lb4_affinity_key *key)
{
	__u32 timeout = svc->backend_id & AFFINITY_TIMEOUT_MASK;
	struct lb_affinity_match match = {};
	struct lb_affinity_val *val;

	val = bpf_map_lookup_elem(&pylium_lb4_affinity, key);
	if (!val)
		return 0;
	if (bpf_ktime_get_ns() - val->last_used > (__u64)timeout * 1000000000ULL) {
		bpf_map_delete_elem(&pylium_lb4_affinity, key);
		return 0;
	}
	match.backend_id = val->backend_id;
	match.rev_nat_id = svc->rev_nat_index;
	if (!bpf_map_lookup_elem(&pylium_lb_affinity_match, &match)) {
		bpf_map_delete_elem(&pylium_lb4_affinity, key);
		return 0;
	}
	return val->backend_id;
}

static __always_inline void lb4_update_affinity(struct lb4_affinity_key *key, __u32 backend_id)
{
	struct lb_affinity_val val = {
		.last_used = bpf_ktime_get_ns(),
		.backend_id = backend_id,
	};

	bpf_map_update_elem(&pylium_lb4_affinity, key, &val, BPF_ANY);
}

/* The ipcache: every known IPv4 prefix -> security identity and, for addresses behind another
 * node in tunnel mode, that node's underlay IP. Written by the agent from its ipcache table
 * (src/pylium/ipcache/encoding.py has the byte layout; datapath/ipcache.py the reconciler). */
#pragma once

#include "common.h"

#define IPCACHE_FLAG_SKIP_TUNNEL (1 << 0)
#define IPCACHE_FLAG_HAS_TUNNEL_EP (1 << 1)

struct ipcache_key {
	__u32 prefixlen; /* host order, as struct bpf_lpm_trie_key wants */
	__be32 ip;
};

struct ipcache_value {
	__u32 sec_identity;
	__be32 tunnel_endpoint; /* 0 when not tunnelled */
	__u16 node_id;
	__u8 encrypt_key;
	__u8 flags; /* IPCACHE_FLAG_* */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pylium_ipcache4 SEC(".maps");

/* The longest-prefix entry for an address (0.0.0.0/0 -> world is always there once synced). */
static __always_inline const struct ipcache_value *ipcache_lookup4(__be32 addr)
{
	struct ipcache_key key = { .prefixlen = 32, .ip = addr };

	return bpf_map_lookup_elem(&pylium_ipcache4, &key);
}

/* The identity of an address, 0 (unknown) when the ipcache has no entry. */
static __always_inline __u32 ipcache_identity4(__be32 addr)
{
	const struct ipcache_value *info = ipcache_lookup4(addr);

	return info ? info->sec_identity : 0;
}

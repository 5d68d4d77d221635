/* Socket-level load balancing (Cilium's bpf_sock.c, IPv4): attached to a node's cgroup, it
 * rewrites a connect() or an unconnected UDP sendmsg() to a service frontend into one to a
 * backend, so packets leave with the backend address and need no per-packet NAT. The frontend
 * is remembered per socket (pylium_lb4_reverse_sk, keyed by socket cookie and backend), and
 * recvmsg() and getpeername() show it again instead of the backend. A NodePort is found on any
 * node's address (the ipcache says host or remote-node) through its 0.0.0.0 frontend, as
 * Cilium's sock4_wildcard_lookup. Only TCP and UDP. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/ipcache.h"
#include "lib/lb.h"
#include "lib/events.h"

#define SYS_REJECT 0
#define SYS_PROCEED 1

#define ECONNREFUSED 111
#define EHOSTUNREACH 113

/* Reserved identities (Cilium's) of node addresses in the ipcache. */
#define IDENTITY_HOST 1
#define IDENTITY_REMOTE_NODE 6

/* Cilium's ipv4_revnat_tuple / ipv4_revnat_entry. */
struct ipv4_revnat_tuple {
	__u64 cookie;
	__be32 address; /* the backend */
	__be16 port;
	__u16 pad;
};

struct ipv4_revnat_entry {
	__be32 address; /* the frontend */
	__be16 port;
	__u16 rev_nat_index;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ipv4_revnat_tuple);
	__type(value, struct ipv4_revnat_entry);
	__uint(max_entries, 65536);
} pylium_lb4_reverse_sk SEC(".maps");

static __always_inline int sock_proto(const struct bpf_sock_addr *ctx)
{
	__u32 proto = ctx->protocol;

	return proto == IPPROTO_TCP || proto == IPPROTO_UDP ? (int)proto : 0;
}

/* The service of a frontend: the exact address, else, for a node's address, the NodePort
 * wildcard (0.0.0.0) entry. `key` is left as the matched entry's (for the slot lookups). */
static __always_inline struct lb4_service *sock4_lookup(struct lb4_key *key)
{
	struct lb4_service *svc = lb4_lookup_service(key, 1);
	__be32 addr = key->address;
	__u32 identity;

	if (svc)
		return svc;
	identity = ipcache_identity4(addr);
	if (identity != IDENTITY_HOST && identity != IDENTITY_REMOTE_NODE)
		return NULL;
	key->address = 0;
	svc = lb4_lookup_service(key, 1);
	return svc && (svc->flags & SVC_FLAG_NODEPORT) ? svc : NULL;
}

/* Frontend -> backend. `saddr`: the socket's source as far as known (for the trace event).
 * Returns 0 (translated or not a service) or a negative errno for the syscall. */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, __be32 saddr)
{
	int proto = sock_proto(ctx);
	struct lb4_key key = {};
	struct lb4_service *svc;
	struct lb4_backend *backend;
	struct lb4_affinity_key aff = {};
	struct ipv4_revnat_tuple rkey = {};
	struct ipv4_revnat_entry rval = {};
	__u32 backend_id = 0;

	if (!proto)
		return 0;
	key.address = ctx->user_ip4;
	key.dport = (__be16)ctx->user_port;
	key.proto = (__u8)proto;
	svc = sock4_lookup(&key);
	if (!svc)
		return 0;
	if (!svc->count)
		return svc->flags2 & SVC_FLAG2_REJECT ? -ECONNREFUSED : -EHOSTUNREACH;

	if (svc->flags & SVC_FLAG_AFFINITY) {
		aff.client_id = bpf_get_netns_cookie(ctx);
		aff.rev_nat_id = svc->rev_nat_index;
		aff.netns = 1;
		backend_id = lb4_affinity_backend_id(svc, &aff);
	}
	backend = backend_id ? lb4_lookup_backend(backend_id) : NULL;
	if (!backend) {
		backend_id = lb4_select_backend_id(&key, svc);
		backend = lb4_lookup_backend(backend_id);
		if (!backend)
			return -EHOSTUNREACH; /* the agent is between updates */
	}
	if (svc->flags & SVC_FLAG_AFFINITY)
		lb4_update_affinity(&aff, backend_id);

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = backend->address;
	rkey.port = backend->port;
	rval.address = ctx->user_ip4; /* what the user asked for, not a wildcard's 0.0.0.0 */
	rval.port = key.dport;
	rval.rev_nat_index = svc->rev_nat_index;
	bpf_map_update_elem(&pylium_lb4_reverse_sk, &rkey, &rval, BPF_ANY);

	/* Hubble's pre- and post-xlate-fwd flows. */
	emit_sock_event(XLATE_PRE_DIRECTION_FWD, svc->rev_nat_index, (__u8)proto, saddr,
			ctx->user_ip4, (__be16)ctx->user_port);
	emit_sock_event(XLATE_POST_DIRECTION_FWD, svc->rev_nat_index, (__u8)proto, saddr,
			backend->address, backend->port);
	ctx->user_ip4 = backend->address;
	ctx->user_port = backend->port;
	return 0;
}

/* Backend -> frontend, for what the socket shows its user. */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	int proto = sock_proto(ctx);
	struct ipv4_revnat_tuple rkey = {};
	struct ipv4_revnat_entry *rval;
	struct lb4_key key = {};
	struct lb4_service *svc;

	if (!proto)
		return;
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = ctx->user_ip4;
	rkey.port = (__be16)ctx->user_port;
	rval = bpf_map_lookup_elem(&pylium_lb4_reverse_sk, &rkey);
	if (!rval)
		return;
	/* Only while that frontend still belongs to the same service. */
	key.address = rval->address;
	key.dport = rval->port;
	key.proto = (__u8)proto;
	svc = sock4_lookup(&key);
	if (!svc || svc->rev_nat_index != rval->rev_nat_index) {
		bpf_map_delete_elem(&pylium_lb4_reverse_sk, &rkey);
		return;
	}
	ctx->user_ip4 = rval->address;
	ctx->user_port = rval->port;
}

static __always_inline int sock4_fwd_verdict(struct bpf_sock_addr *ctx, __be32 saddr)
{
	int err = sock4_xlate_fwd(ctx, saddr);

	if (err) {
		/* Returning SYS_REJECT alone gives EPERM; say why instead (kernel 5.18+). */
		bpf_set_retval(err);
		return SYS_REJECT;
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	return sock4_fwd_verdict(ctx, 0); /* the source is chosen after this hook */
}

SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return sock4_fwd_verdict(ctx, ctx->msg_src_ip4);
}

SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

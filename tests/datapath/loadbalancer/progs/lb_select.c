/* Runs lib/lb.h's backend selection on a flow given in the packet (BPF_PROG_TEST_RUN): after
 * an Ethernet header, struct lb_select_flow. The program writes the chosen backend's address
 * and id back into it, so a test sees what a per-packet path would pick. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "lib/lb.h"

struct lb_select_flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
	__be32 backend_address; /* out */
	__u32 backend_id;	/* out */
};

SEC("xdp")
int lb_select(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct lb_select_flow *flow = data + ETH_HLEN;
	struct lb4_key key = {};
	struct lb4_service *svc;
	struct lb4_backend *backend;
	__u32 hash;

	if ((void *)(flow + 1) > data_end)
		return XDP_ABORTED;
	key.address = flow->daddr;
	key.dport = flow->dport;
	key.proto = flow->proto;
	svc = lb4_lookup_service(&key, 0);
	if (!svc)
		return XDP_DROP;
	hash = lb4_flow_hash(flow->saddr, flow->daddr, flow->sport, flow->dport, flow->proto);
	flow->backend_id = lb4_select_backend(&key, svc, hash);
	backend = lb4_lookup_backend(flow->backend_id);
	flow->backend_address = backend ? backend->address : 0;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

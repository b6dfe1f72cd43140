/* The floor of vaultfw's design: parse Ethernet (and at most one VLAN tag)
 * and IPv4, do exactly one LPM-trie lookup on the source address, and
 * return PASS on a hit, DROP on a miss. No port check, no counters, no
 * table-set index. The bench sizes BENCH_RULES and fills it with the same
 * prefixes vaultfw gets. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} BENCH_RULES SEC(".maps");

SEC("xdp")
int bench_one_lookup(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u64 l3 = sizeof(*eth);

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__u16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		__be16 *inner = data + l3 + 2;
		if ((void *)(inner + 1) > data_end)
			return XDP_DROP;
		proto = *inner;
		l3 += 4;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = data + l3;
	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	struct lpm_v4_key key = { .prefixlen = 32 };
	__builtin_memcpy(key.addr, &ip->saddr, 4);
	return bpf_map_lookup_elem(&BENCH_RULES, &key) ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

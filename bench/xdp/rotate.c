/* Makes BPF_PROG_TEST_RUN judge a different source address on every
 * repetition: writes the next address of BENCH_SOURCES into the frame's
 * IPv4 source field (at the offset in BENCH_STATE), then tail-calls the
 * program under test (slot 0 of BENCH_TARGET). One test run with
 * repeat = 1,000,000 thus walks a million trie paths instead of one path a
 * million times. The bench subtracts the cost of rotate -> pass. */
#include "common.h"

#define SOURCES 65536 /* a power of two: the index is masked */

struct rotate_state {
	__u32 next;   /* index of the next source */
	__u32 offset; /* byte offset of the IPv4 source address in the frame */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, SOURCES);
} BENCH_SOURCES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rotate_state);
	__uint(max_entries, 1);
} BENCH_STATE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} BENCH_TARGET SEC(".maps");

SEC("xdp")
int bench_rotate(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct rotate_state *st = bpf_map_lookup_elem(&BENCH_STATE, &zero);
	if (!st)
		return XDP_ABORTED;
	__u32 idx = st->next & (SOURCES - 1);
	st->next = idx + 1;
	__u32 *src = bpf_map_lookup_elem(&BENCH_SOURCES, &idx);
	if (!src)
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 off = st->offset & 63;
	__u32 *field = data + off;
	if ((void *)(field + 1) > data_end)
		return XDP_ABORTED;
	*field = *src;
	bpf_tail_call(ctx, &BENCH_TARGET, 0);
	return XDP_ABORTED;
}

char LICENSE[] SEC("license") = "GPL";

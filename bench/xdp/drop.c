/* The XDP hook's drop-everything floor for the veth receive bench. */
#include "common.h"

SEC("xdp")
int bench_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

/* The test-run overhead: an XDP program that looks at nothing. */
#include "common.h"

SEC("xdp")
int bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

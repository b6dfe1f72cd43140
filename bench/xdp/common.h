/* Shared by the bench's peer programs: the headers they need and the
 * LPM-trie key they use (the same layout as vaultfw's IPv4 rule tries:
 * prefix length, then the address in network byte order). */
#ifndef VFW_BENCH_COMMON_H
#define VFW_BENCH_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

#endif

// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// moat's XDP redirector: the only code of moat that runs in the kernel.
//
// Every frame that arrives on a guarded interface goes to the AF_XDP socket bound to the frame's RX
// queue, where a userspace worker parses it and decides. The program itself makes exactly two
// decisions, both configured from userspace through maps:
//
//  1. Failsafe: a TCP/UDP frame addressed to this interface's own MAC whose destination port (or, for
//     replies to connections the node opened, source port) is in `failsafe_ports` goes to the kernel
//     stack (XDP_PASS), so the node stays manageable whatever the policy and whether or not moat's
//     workers are alive. Frames for other MACs (the traffic moat forwards in wire mode) never take
//     this path: failsafe protects the node, it does not open holes through the firewall.
//     ARP that concerns this host — a request for one of its IPv4 addresses, or anything unicast to its
//     MAC — also goes to the kernel, or nobody could resolve the node's address to reach those ports.
//  2. No socket: when no AF_XDP socket is registered for the RX queue (moat not started yet, worker
//     restarting), the frame is dropped (fail closed, the default) or passed to the kernel (fail
//     open), as `config.no_socket_action` says.
//
// Everything else is policy, and policy lives in userspace. Keep this program minimal: it must be
// obviously correct, and every instruction here is paid by every frame.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_QUEUES 256
#define MAX_FAILSAFE_PORTS 64
#define MAX_LOCAL_IPV4 8

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_ARP_ 0x0806

// Values of moat_config.no_socket_action.
#define NO_SOCKET_DROP 0
#define NO_SOCKET_PASS 1

// Values of failsafe_key.direction.
#define FAILSAFE_DST_PORT 0 // inbound: a connection to the node's service port
#define FAILSAFE_SRC_PORT 1 // outbound: replies to a connection the node opened to that port

// Indices of the `stats` per-CPU counters; mirrored by `Stat` in src/lib.rs.
enum stat {
	STAT_REDIRECTED = 0,
	STAT_NO_SOCKET_DROPPED = 1,
	STAT_NO_SOCKET_PASSED = 2,
	STAT_FAILSAFE_PASSED = 3,
	STAT_LOCAL_ARP_PASSED = 4,
	STAT_COUNT = 5,
};

struct moat_config {
	__u8 mac[ETH_ALEN];       // this interface's MAC: only frames addressed to it are failsafe candidates
	__u8 no_socket_action;    // NO_SOCKET_DROP | NO_SOCKET_PASS
	__u8 failsafe_enabled;    // 0: skip the failsafe lookup entirely
	__u8 local_ipv4_count;    // valid entries of local_ipv4
	__u8 pad[7];
	__be32 local_ipv4[MAX_LOCAL_IPV4]; // this interface's IPv4 addresses (network byte order)
};

struct failsafe_key {
	__u8 protocol;  // IPPROTO_TCP or IPPROTO_UDP
	__u8 direction; // FAILSAFE_DST_PORT | FAILSAFE_SRC_PORT
	__u16 port;     // host byte order
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct moat_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FAILSAFE_PORTS);
	__type(key, struct failsafe_key);
	__type(value, __u8);
} failsafe_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *counter = bpf_map_lookup_elem(&stats, &which);
	if (counter)
		*counter += 1;
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

static __always_inline int port_listed(__u8 protocol, __u8 direction, __u16 port)
{
	struct failsafe_key key = { .protocol = protocol, .direction = direction, .port = port };
	return bpf_map_lookup_elem(&failsafe_ports, &key) != NULL;
}

// Ethernet/IPv4 ARP body after the 8-byte fixed header (RFC 826 with hlen 6, plen 4).
struct arp_ipv4 {
	__u8 sender_mac[ETH_ALEN];
	__be32 sender_ip;
	__u8 target_mac[ETH_ALEN];
	__be32 target_ip;
} __attribute__((packed));

// True when an ARP frame concerns this host: unicast to its MAC, or asking for one of its addresses.
static __always_inline int is_local_arp(void *cursor, void *data_end, int to_our_mac, const struct moat_config *cfg)
{
	if (to_our_mac)
		return 1;
	// 8 bytes of htype/ptype/hlen/plen/op, then the IPv4 body.
	struct arp_ipv4 *body = cursor + 8;
	if ((void *)(body + 1) > data_end)
		return 0;
	__be32 target = body->target_ip;
#pragma unroll
	for (int i = 0; i < MAX_LOCAL_IPV4; i++) {
		if (i < cfg->local_ipv4_count && cfg->local_ipv4[i] == target)
			return 1;
	}
	return 0;
}

// 1 when the frame is TCP/UDP to this host on a failsafe port, 2 when it is ARP for this host, else 0.
// Unparseable or non-matching frames return 0 and take the normal path, where userspace accounts for them.
static __always_inline int is_failsafe(void *data, void *data_end, const struct moat_config *cfg)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 0;
	int to_our_mac = mac_equal(eth->h_dest, cfg->mac);

	void *cursor = eth + 1;
	__u16 proto = eth->h_proto;
	// At most two VLAN tags (802.1ad outer, 802.1Q inner); unrolled for the verifier.
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		if (cursor + 4 > data_end)
			return 0;
		proto = *(__u16 *)(cursor + 2);
		cursor += 4;
	}

	if (proto == bpf_htons(ETH_P_ARP_))
		return is_local_arp(cursor, data_end, to_our_mac, cfg) ? 2 : 0;
	if (!to_our_mac)
		return 0;

	__u8 l4proto;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor;
		if ((void *)(ip + 1) > data_end)
			return 0;
		// Later fragments carry no ports: never failsafe.
		if (ip->frag_off & bpf_htons(0x1FFF))
			return 0;
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return 0;
		l4proto = ip->protocol;
		cursor = (void *)ip + ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor;
		if ((void *)(ip6 + 1) > data_end)
			return 0;
		// Only TCP/UDP directly after the fixed header; extension chains take the normal path.
		l4proto = ip6->nexthdr;
		cursor = ip6 + 1;
	} else {
		return 0;
	}

	if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
		return 0;
	// TCP and UDP both start with source port, destination port.
	if (cursor + 4 > data_end)
		return 0;
	__u16 sport = bpf_ntohs(*(__u16 *)cursor);
	__u16 dport = bpf_ntohs(*(__u16 *)(cursor + 2));
	return port_listed(l4proto, FAILSAFE_DST_PORT, dport) ||
	       port_listed(l4proto, FAILSAFE_SRC_PORT, sport);
}

SEC("xdp")
int moat_redirect(struct xdp_md *ctx)
{
	__u32 zero = 0;
	const struct moat_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg) // cannot happen for an ARRAY map; fail closed if it ever does
		return XDP_DROP;

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (cfg->failsafe_enabled) {
		int failsafe = is_failsafe(data, data_end, cfg);
		if (failsafe) {
			count(failsafe == 2 ? STAT_LOCAL_ARP_PASSED : STAT_FAILSAFE_PASSED);
			return XDP_PASS;
		}
	}

	__u32 queue = ctx->rx_queue_index;
	if (bpf_map_lookup_elem(&xsks, &queue)) {
		count(STAT_REDIRECTED);
		// The fallback action only matters if the socket goes away between lookup and redirect.
		return bpf_redirect_map(&xsks, queue,
					cfg->no_socket_action == NO_SOCKET_PASS ? XDP_PASS : XDP_DROP);
	}

	if (cfg->no_socket_action == NO_SOCKET_PASS) {
		count(STAT_NO_SOCKET_PASSED);
		return XDP_PASS;
	}
	count(STAT_NO_SOCKET_DROPPED);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Kernel enforcement of one isolated pod: attached only to that pod's cgroup
// (so pods that are not isolated run none of this), it drops the cgroup's
// packets both ways and lets through only DNS to the allowed endpoints. The
// socket iterators destroy the cgroup's established sockets, so a live
// connection is cut at once instead of lingering until its conntrack entry
// expires.
//
// Only cgroup_skb programs are attached, on purpose: the kernel skips them
// for a socket whose cgroup has none, while the sock_addr hooks
// (cgroup/connect4/6, cgroup/sendmsg4/6), once attached to any cgroup, make
// every UDP sendto(2) and connect(2) on the host take the socket lock to run
// an empty program list (measured by BenchmarkSiblingOverhead). A dropped
// egress packet makes sendto(2) fail with EPERM at once; a TCP connect's SYN
// is dropped the same way, so the connect never completes and fails when
// its timeout (or the SYN retries) runs out.

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_core_read.h"
#include "bpf_endian.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define AF_INET_ 2
#define AF_INET6_ 10
#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_LISTEN_ 10
#define TCP_CLOSE_ 7
#define MAX_CGROUP_LEVEL 32

// An allowed endpoint: IPv6 address (IPv4 as ::ffff:a.b.c.d) and port in
// network byte order. Matches both UDP and TCP.
struct endpoint {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

// One allow map and one counter map per attached cgroup: user space creates
// them for each isolation and pins them beside its links.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct endpoint);
	__type(value, __u8);
} allow SEC(".maps");

// Slots 2 and 3 counted the sock_addr refusals of earlier versions; they
// stay so the counter maps pinned by those versions remain compatible.
enum counter {
	CNT_EGRESS = 0,
	CNT_INGRESS = 1,
	CNT_MAX = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// The iterators are loaded once and pointed at one cgroup per run: user
// space writes its id here and its allowed endpoints to iter_allow.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} iter_target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct endpoint);
	__type(value, __u8);
} iter_allow SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void map_v4(struct endpoint *ep, __be32 ip)
{
	__builtin_memset(ep->addr, 0, 10);
	ep->addr[10] = 0xff;
	ep->addr[11] = 0xff;
	__builtin_memcpy(&ep->addr[12], &ip, 4);
}

static __always_inline int allowed(struct endpoint *ep)
{
	ep->pad = 0;
	return bpf_map_lookup_elem(&allow, ep) != NULL;
}

// skb_allowed reports whether a packet is DNS to (egress) or from (ingress)
// an allowed endpoint. Anything it cannot parse is dropped.
static __always_inline int skb_allowed(struct __sk_buff *skb, int egress)
{
	struct endpoint ep = {};
	__u8 proto;
	__u32 l4off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		// Later fragments carry no ports.
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0;
		proto = ip.protocol;
		l4off = ip.ihl * 4;
		map_v4(&ep, egress ? ip.daddr : ip.saddr);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		// Extension headers are not walked: such packets are dropped.
		proto = ip6.nexthdr;
		l4off = sizeof(ip6);
		if (egress)
			__builtin_memcpy(ep.addr, &ip6.daddr, 16);
		else
			__builtin_memcpy(ep.addr, &ip6.saddr, 16);
	} else {
		return 0;
	}
	if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_)
		return 0;
	// Source and destination ports are the first four bytes of TCP and UDP.
	__be16 ports[2];
	if (bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)))
		return 0;
	ep.port = egress ? ports[1] : ports[0];
	return allowed(&ep);
}

SEC("cgroup_skb/egress")
int egress(struct __sk_buff *skb)
{
	if (skb_allowed(skb, 1))
		return 1;
	count(CNT_EGRESS);
	return 0;
}

SEC("cgroup_skb/ingress")
int ingress(struct __sk_buff *skb)
{
	if (skb_allowed(skb, 0))
		return 1;
	count(CNT_INGRESS);
	return 0;
}

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

// in_target reports whether the socket belongs to the target cgroup or one of
// its descendants (a pod's containers are child cgroups of the pod's).
static __always_inline int in_target(struct sock *sk)
{
	__u32 zero = 0;
	__u64 *target = bpf_map_lookup_elem(&iter_target, &zero);
	if (!target || *target == 0)
		return 0;
	__u64 target_cgid = *target;
	struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	if (!cg)
		return 0;
	int level = BPF_CORE_READ(cg, level);
	__u32 off = bpf_core_field_offset(struct cgroup, ancestors);
	for (int i = 0; i < MAX_CGROUP_LEVEL; i++) {
		if (i > level)
			break;
		struct cgroup *anc = NULL;
		if (bpf_probe_read_kernel(&anc, sizeof(anc), (void *)cg + off + i * sizeof(anc)))
			return 0;
		if (anc && BPF_CORE_READ(anc, kn, id) == target_cgid)
			return 1;
	}
	return 0;
}

// peer_allowed reports whether the socket's remote end is an allowed DNS
// endpoint, whose connections survive the isolation.
static __always_inline int peer_allowed(struct sock_common *skc)
{
	struct endpoint ep = {};
	if (skc->skc_family == AF_INET_)
		map_v4(&ep, skc->skc_daddr);
	else
		__builtin_memcpy(ep.addr, &skc->skc_v6_daddr, 16);
	ep.port = skc->skc_dport;
	return bpf_map_lookup_elem(&iter_allow, &ep) != NULL;
}

// Each destroy attempt writes its result (0 or -errno) to the iterator's
// output, so user space counts what was cut and sees what failed.
static __always_inline void destroy(struct bpf_iter_meta *meta, struct sock_common *skc)
{
	int ret = bpf_sock_destroy(skc);
	bpf_seq_write(meta->seq, &ret, sizeof(ret));
}

SEC("iter/tcp")
int destroy_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	// Full sockets only: request and time-wait sockets have no sk_cgrp_data.
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	struct sock *sk = (struct sock *)tp;
	// Listeners stay: they carry no traffic once ingress is dropped, and
	// keeping them leaves the workload running for forensics. A connecting
	// socket has nothing to cut: egress drops its SYNs and ingress its
	// SYN-ACK, so it never establishes.
	if (skc->skc_state == TCP_LISTEN_ || skc->skc_state == TCP_CLOSE_ || skc->skc_state == TCP_SYN_SENT_)
		return 0;
	if (!in_target(sk) || peer_allowed(skc))
		return 0;
	destroy(ctx->meta, skc);
	return 0;
}

SEC("iter/udp")
int destroy_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *up = ctx->udp_sk;
	if (!up)
		return 0;
	struct sock *sk = (struct sock *)up;
	struct sock_common *skc = &sk->__sk_common;
	// Only connected UDP sockets have a peer to cut; unconnected ones can
	// send nothing past sendmsg and egress.
	if (skc->skc_dport == 0)
		return 0;
	if (!in_target(sk) || peer_allowed(skc))
		return 0;
	destroy(ctx->meta, skc);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

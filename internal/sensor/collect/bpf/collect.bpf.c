// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Per-container behaviour for bulkhead sensor: system-call trigrams counted in
// the kernel, process execs and socket connects/listens sent on a ring buffer.
// Only tasks whose cgroup v2 id is in `tracked` cost more than a bit test.
// Every program is a BTF tracepoint (tp_btf): fentry/fexit and kprobes are
// not available on every kernel we run on (kprobes compiled out, fentry
// refused with EPERM on the CI machines).
// The record layouts below are decoded by DecodeRecord (decode.go); keep both
// in step (decode_test.go checks them against the bpf2go-generated types).

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_tracing.h"
#include "bpf_core_read.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define REC_EXEC 1
#define REC_CONN 2

#define FILENAME_LEN 256
#define COMM_LEN 16
#define EXE_LEN 64
#define ARGS_LEN 1024

// Set by user space before load.
const volatile __u64 udp_dedup_ns = 60ULL * 1000 * 1000 * 1000;

struct hdr {
	__u32 type;
	__u32 pid; /* tgid */
	__u64 cgroup;
	__u64 ts; /* CLOCK_MONOTONIC ns */
};

struct exec_event {
	struct hdr h;
	__u32 ppid;
	__u32 uid;
	__u32 args_len;   /* bytes valid in args */
	__u32 args_trunc; /* 1 when argv was longer than ARGS_LEN */
	char filename[FILENAME_LEN];
	char parent_comm[COMM_LEN];
	char parent_exe[EXE_LEN];
	char args[ARGS_LEN];
};

struct conn_event {
	struct hdr h;
	__u16 family;
	__u16 port; /* host byte order */
	__u8 protocol;
	__u8 listen;
	__u8 pad[2];
	__u8 addr[16];
};

struct trigram_key {
	__u64 cgroup;
	__u64 trigram; /* oldest << 32 | middle << 16 | newest */
};

struct udp_key {
	__u64 cgroup;
	__u16 family;
	__u16 port;
	__u32 pad;
	__u8 addr[16];
};

struct history {
	__u64 cgroup;   /* the cgroup `tracked` was last checked for */
	__u32 gen;      /* tracked_gen then */
	__u16 prev[2];
	__u8 n;         /* calls remembered in prev, up to 2 */
	__u8 tracked;
	__u8 pad[2];
	__u32 epoch;    /* sys_epoch when prev was written */
};

// Calls seen by sys_enter on a CPU while it is attached: every task's, and
// the tracked cgroups'. User space turns them into the host's system-call
// rate, which sets how long sys_enter may stay attached (duty.go).
struct call_counts {
	__u64 all;
	__u64 tracked;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024); /* Options.MaxTracked */
	__type(key, __u64);
	__type(value, __u32);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* Options.MaxTrigrams */
	__type(key, struct trigram_key);
	__type(value, __u64);
} trigrams SEC(".maps");

// The fast path of the trigram counters: per CPU, direct-mapped tables of
// (cgroup, trigram, count) slots, in two generations. The programs count into
// the one fast_epoch names; user space drains by switching fast_epoch, then
// reading and clearing the other. A lookup in a per-CPU array is a few
// instructions with no helper call and its slots are written by one CPU only,
// so a count costs no atomic and no hashing helper. A trigram whose two slots
// are taken by others falls back to `trigrams`.
#define FAST_SLOTS 2048 /* per table and CPU; a power of two (fastSlots in collect.go) */
struct trigram_slot {
	__u64 cgroup; /* 0: free (no cgroup v2 has id 0) */
	__u64 trigram;
	__u64 count;
};

struct fast_table {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FAST_SLOTS);
	__type(key, __u32);
	__type(value, struct trigram_slot);
};
struct fast_table fast0 SEC(".maps");
struct fast_table fast1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct history);
} histories SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct udp_key);
	__type(value, __u64);
} udp_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024); /* Options.RingBufferBytes */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct call_counts);
} calls SEC(".maps");

// lost[0]: ring buffer records dropped because the buffer was full.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

// Types for bpf2go -type, so the Go side can check the layouts.
const struct exec_event *unused_exec __attribute__((unused));
const struct trigram_slot *unused_slot __attribute__((unused));
const struct call_counts *unused_calls __attribute__((unused));
const struct conn_event *unused_conn __attribute__((unused));

// A filter in front of `tracked`: bit tracked_bit(id) is set for every
// tracked cgroup. A clear bit, the answer for nearly every untracked task,
// costs a load and no helper call (calls are dear with return-stack
// mitigations); a set bit is confirmed in the hash map. User space keeps it.
#define TRACKED_BITS 4096
volatile __u64 tracked_bits[TRACKED_BITS / 64];
// Bumped by user space after every change of `tracked`: a thread's cached
// answer (struct history) holds only for the generation it was taken in.
volatile __u32 tracked_gen;
// Bumped by user space before it attaches sys_enter again after a gap: the
// calls a thread made before the gap do not start a trigram after it.
volatile __u32 sys_epoch;
// Which fast table the programs count into: fast0 when even, fast1 when odd.
volatile __u32 fast_epoch;

static __always_inline __u32 tracked_bit(__u64 cg)
{
	return (cg * 0x9E3779B97F4A7C15ULL) >> (64 - 12);
}

static __always_inline int maybe_tracked(__u64 cg)
{
	__u32 bit = tracked_bit(cg);
	return (tracked_bits[(bit / 64) & (TRACKED_BITS / 64 - 1)] & (1ULL << (bit % 64))) != 0;
}

// fast_count counts (cg, tri) in one of slot idx's two ways of this CPU's
// table; 0 when both are taken by other trigrams.
static __always_inline int fast_count(void *table, __u32 idx, __u64 cg, __u64 tri)
{
	for (__u32 way = 0; way < 2; way++) {
		__u32 i = (idx ^ way) & (FAST_SLOTS - 1);
		struct trigram_slot *s = bpf_map_lookup_elem(table, &i);
		if (!s)
			return 0;
		if (s->cgroup == cg && s->trigram == tri) {
			s->count++;
			return 1;
		}
		if (s->cgroup == 0) {
			s->trigram = tri;
			s->count = 1;
			s->cgroup = cg;
			return 1;
		}
	}
	return 0;
}

static __always_inline int is_tracked(__u64 cg)
{
	return maybe_tracked(cg) && bpf_map_lookup_elem(&tracked, &cg) != NULL;
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&lost, &zero);
	if (v)
		*v += 1;
}

static __always_inline void fill_hdr(struct hdr *h, __u32 type, __u64 cg)
{
	h->type = type;
	h->pid = bpf_get_current_pid_tgid() >> 32;
	h->cgroup = cg;
	h->ts = bpf_ktime_get_ns();
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	// What bpf_get_current_cgroup_id returns, read without its call.
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 cg = task->cgroups->dfl_cgrp->kn->id;
	__u32 zero = 0;
	struct call_counts *cc = bpf_map_lookup_elem(&calls, &zero);
	if (cc)
		cc->all++;
	if (!maybe_tracked(cg))
		return 0;
	if (id < 0 || id >= 0xffff)
		return 0;

	struct history *h = bpf_task_storage_get(&histories, task, 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!h)
		return 0;
	// The thread's cached answer saves the hash lookup on every call.
	__u32 gen = tracked_gen;
	if (h->cgroup != cg || h->gen != gen) {
		if (h->cgroup != cg)
			h->n = 0; /* a sequence does not continue across cgroups */
		h->cgroup = cg;
		h->gen = gen;
		h->tracked = bpf_map_lookup_elem(&tracked, &cg) != NULL;
	}
	if (!h->tracked)
		return 0;
	if (cc)
		cc->tracked++;
	__u32 epoch = sys_epoch;
	if (h->epoch != epoch) {
		h->n = 0; /* nor across a gap in which sys_enter was detached */
		h->epoch = epoch;
	}
	__u16 nr = id;
	if (h->n >= 2) {
		__u64 tri = ((__u64)h->prev[0] << 32) | ((__u64)h->prev[1] << 16) | nr;
		__u32 idx = ((cg * 0x9E3779B97F4A7C15ULL) ^ (tri * 0xC2B2AE3D27D4EB4FULL)) >> 40;
		// Two calls, one map each: a lookup site that sees one map only
		// is inlined by the verifier.
		int counted = (fast_epoch & 1) ? fast_count(&fast1, idx, cg, tri)
					       : fast_count(&fast0, idx, cg, tri);
		if (counted)
			goto next;
		struct trigram_key k = {
			.cgroup = cg,
			.trigram = tri,
		};
		__u64 *c = bpf_map_lookup_elem(&trigrams, &k);
		if (c) {
			__sync_fetch_and_add(c, 1);
		} else {
			__u64 one = 1;
			if (bpf_map_update_elem(&trigrams, &k, &one, BPF_NOEXIST)) {
				/* Another CPU inserted it first. */
				c = bpf_map_lookup_elem(&trigrams, &k);
				if (c)
					__sync_fetch_and_add(c, 1);
			}
		}
	} else {
		h->n++;
	}
next:
	h->prev[0] = h->prev[1];
	h->prev[1] = nr;
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 cg = bpf_get_current_cgroup_id();
	if (!is_tracked(cg))
		return 0;

	struct exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return 0;
	}
	fill_hdr(&e->h, REC_EXEC, cg);
	e->uid = bpf_get_current_uid_gid();

	struct task_struct *parent = BPF_CORE_READ(p, real_parent);
	e->ppid = BPF_CORE_READ(parent, tgid);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	bpf_probe_read_kernel_str(e->parent_comm, sizeof(e->parent_comm), parent->comm);
	e->parent_exe[0] = 0;
	const unsigned char *exe = BPF_CORE_READ(parent, mm, exe_file, f_path.dentry, d_name.name);
	if (exe)
		bpf_probe_read_kernel_str(e->parent_exe, sizeof(e->parent_exe), exe);

	unsigned long start = BPF_CORE_READ(p, mm, arg_start);
	unsigned long end = BPF_CORE_READ(p, mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	e->args_trunc = 0;
	if (len > ARGS_LEN) {
		len = ARGS_LEN;
		e->args_trunc = 1;
	}
	e->args_len = 0;
	if (len > 0 && bpf_probe_read_user(e->args, len, (void *)start) == 0)
		e->args_len = len;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline void emit_conn(__u64 cg, __u16 family, __u16 port,
				      __u8 protocol, __u8 listen, const void *addr6, __u32 addr4)
{
	struct conn_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return;
	}
	fill_hdr(&e->h, REC_CONN, cg);
	e->family = family;
	e->port = port;
	e->protocol = protocol;
	e->listen = listen;
	e->pad[0] = 0;
	e->pad[1] = 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (family == AF_INET6 && addr6)
		bpf_probe_read_kernel(e->addr, 16, addr6);
	else
		__builtin_memcpy(e->addr, &addr4, 4);
	bpf_ringbuf_submit(e, 0);
}

#define TCP_SYN_SENT 2
#define TCP_LISTEN 10

// TCP connect and listen as state changes, in the calling task: connect()
// moves CLOSE -> SYN_SENT after setting the destination; listen() moves to
// LISTEN (a socket that was never bound gets its port only afterwards: 0).
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (newstate != TCP_SYN_SENT && newstate != TCP_LISTEN)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u64 cg = bpf_get_current_cgroup_id();
	if (!is_tracked(cg))
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	__u8 listen = newstate == TCP_LISTEN;
	__u16 port = listen ? sk->__sk_common.skc_num : __builtin_bswap16(sk->__sk_common.skc_dport);
	if (family == AF_INET6)
		emit_conn(cg, family, port, IPPROTO_TCP, listen,
			  listen ? &sk->__sk_common.skc_v6_rcv_saddr : &sk->__sk_common.skc_v6_daddr, 0);
	else if (family == AF_INET)
		emit_conn(cg, family, port, IPPROTO_TCP, listen, NULL,
			  listen ? sk->__sk_common.skc_rcv_saddr : sk->__sk_common.skc_daddr);
	return 0;
}

// udp_first reports whether this destination was not seen in the last
// udp_dedup_ns, and records it.
static __always_inline int udp_first(struct udp_key *k)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 *last = bpf_map_lookup_elem(&udp_seen, k);
	if (last && now - *last < udp_dedup_ns)
		return 0;
	bpf_map_update_elem(&udp_seen, k, &now, BPF_ANY);
	return 1;
}

// UDP destinations from the packets a local socket queues to a device:
// __dev_queue_xmit runs in the sending task, so both unconnected (sendto)
// and connected sockets are seen. A packet that waits for neighbour
// resolution is sent later from softirq context and not attributed.
SEC("tp_btf/net_dev_queue")
int BPF_PROG(net_dev_queue, struct sk_buff *skb)
{
	struct sock *sk = skb->sk;
	if (!sk)
		return 0; /* forwarded, not sent by a local task */
	if (sk->sk_protocol != IPPROTO_UDP)
		return 0;
	__u64 cg = bpf_get_current_cgroup_id();
	if (!is_tracked(cg))
		return 0;

	unsigned char *head = skb->head;
	__u16 nh = skb->network_header;
	__u16 th = skb->transport_header;
	struct udp_key k = {.cgroup = cg};
	__u8 ver = 0;
	if (bpf_probe_read_kernel(&ver, 1, head + nh))
		return 0;
	ver >>= 4;
	if (ver == 4) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || ip.protocol != IPPROTO_UDP)
			return 0;
		k.family = AF_INET;
		__builtin_memcpy(k.addr, &ip.daddr, 4);
	} else if (ver == 6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) || ip6.nexthdr != IPPROTO_UDP)
			return 0;
		k.family = AF_INET6;
		__builtin_memcpy(k.addr, &ip6.daddr, 16);
	} else {
		return 0;
	}
	struct udphdr uh;
	if (bpf_probe_read_kernel(&uh, sizeof(uh), head + th))
		return 0;
	k.port = __builtin_bswap16(uh.dest);
	if (!udp_first(&k))
		return 0;
	__u32 addr4;
	__builtin_memcpy(&addr4, k.addr, 4);
	emit_conn(cg, k.family, k.port, IPPROTO_UDP, 0, k.addr, addr4);
	return 0;
}

// A socket open in some cgroup, as the iterator below writes it (decoded by
// decodeSockRecord in sockets.go).
struct sock_record {
	__u64 cgroup; /* cgroup v2 id of the task that created the socket */
	__u16 family;
	__u16 lport;  /* host byte order */
	__u16 rport;  /* host byte order */
	__u8 state;
	__u8 pad;
	__u8 laddr[16];
	__u8 raddr[16];
};

const struct sock_record *unused_sock __attribute__((unused));

#define TCP_ESTABLISHED 1

// The TCP sockets that existed before a cgroup was tracked: connections and
// listeners made earlier were never seen by inet_sock_set_state, so a
// learning window would miss them and a later reconnect would look new.
// Every listener of the namespace is written (user space tells accepted
// connections from outbound ones by their local port), and the connected
// and connecting sockets of tracked cgroups.
SEC("iter/tcp")
int existing_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	// Full sockets only: request and time-wait sockets have no cgroup.
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	struct sock *sk = (struct sock *)tp;
	__u8 state = skc->skc_state;
	if (state != TCP_LISTEN && state != TCP_ESTABLISHED && state != TCP_SYN_SENT)
		return 0;
	__u64 cg = 0;
	struct cgroup *cgrp = sk->sk_cgrp_data.cgroup;
	if (cgrp)
		cg = cgrp->kn->id;
	if (state != TCP_LISTEN && !is_tracked(cg))
		return 0;
	struct sock_record r = {
		.cgroup = cg,
		.family = skc->skc_family,
		.lport = skc->skc_num,
		.rport = __builtin_bswap16(skc->skc_dport),
		.state = state,
	};
	if (r.family == AF_INET6) {
		bpf_probe_read_kernel(r.laddr, 16, &skc->skc_v6_rcv_saddr);
		bpf_probe_read_kernel(r.raddr, 16, &skc->skc_v6_daddr);
	} else if (r.family == AF_INET) {
		__builtin_memcpy(r.laddr, &skc->skc_rcv_saddr, 4);
		__builtin_memcpy(r.raddr, &skc->skc_daddr, 4);
	} else {
		return 0;
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* TLS plaintext capture: uprobes on OpenSSL's SSL_write/SSL_read (and the _ex variants), plus
 * SSL_free and the handshake entry points for the connection lifecycle, SSL_ctrl for the server
 * name (SNI) and SSL_set_fd for the socket; tracepoints on connect() for peer addresses and on
 * exec/exit so the recorder can find new TLS libraries as processes start.
 *
 * Compiled by bcc at run time. The recorder prepends #defines for CHUNK_SIZE, MAX_CHUNKS,
 * RINGBUF_PAGES, CONN_MAP_SIZE and RECORDER_PID, and appends the entry probes (DEFINE_PROBES, at the
 * end): every record says which library file produced it (lib_id), from the probe's BPF cookie, or on
 * kernels without cookies from a per-slot copy of the entry probes. The return probes, which hold the
 * chunk loop the verifier works hardest on, are shared and read lib_id from the saved arguments.
 *
 * In-kernel work is kept small: save arguments on entry, and on return copy what the call really
 * moved into the ring buffer in CHUNK_SIZE pieces, each carrying its byte offset in the stream.
 * Nothing is parsed here.
 */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include "tls_capture.h"

/* Plaintext records, drained in batches by the recorder. Records are written with
 * BPF_RB_NO_WAKEUP: waking the reader on each record cost the traced thread more than the copy
 * itself (docs/performance.md); the recorder drains on a short timer instead. */
BPF_RINGBUF_OUTPUT(records, RINGBUF_PAGES);

/* A data record is reserved in the ring buffer at one of four constant sizes (the verifier wants
 * constants) and the application's buffer is read straight into it: one copy, not two. The sizes
 * waste at most 4x of ring space, never segment space: the recorder keeps only `len` bytes. */
#define CLASS_1 (CHUNK_SIZE / 64)
#define CLASS_2 (CHUNK_SIZE / 16)
#define CLASS_3 (CHUNK_SIZE / 4)
#define CLASS_4 CHUNK_SIZE

/* Connection state keyed by (tgid, SSL*): the generation that tells reused pointers apart, and
 * the next stream offset per direction. LRU so that connections whose SSL_free we never see (the
 * process was killed) cannot fill the map. */
struct conn_key_t {
    u64 ssl;
    u32 pid;
    u32 pad;
};
struct conn_t {
    u64 gen;
    u64 off[2];
    u32 opened;      /* an OPEN record was written */
    u32 socket_seen; /* a SOCKET record was written (or none can be: see on_return) */
};
BPF_TABLE("lru_hash", struct conn_key_t, struct conn_t, conns, CONN_MAP_SIZE);

/* Generation counter (index 0), seeded by the recorder with a value unique to its run. */
BPF_ARRAY(generation, u64, 1);

/* Arguments saved at entry for the return probe, one call in flight per thread. Task-local storage
 * (kernel 5.11+) is a pointer away from the task, where a hash map keyed by pid_tgid hashes, locks
 * and deletes on every call: measured 3 us per call cheaper here (docs/performance.md). */
struct call_args_t {
    u64 ssl; /* 0: no call in flight */
    u64 buf;
    u64 len_ptr; /* size_t *written / *readbytes of the _ex variants, 0 otherwise */
    u64 lib_id;
};
#ifdef USE_TASK_STORAGE
BPF_TASK_STORAGE(active_calls, struct call_args_t);

static __always_inline void save_args(struct call_args_t *args) {
    struct call_args_t *a =
        active_calls.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (a)
        *a = *args;
}

static __always_inline int take_args(struct call_args_t *out) {
    struct call_args_t *a = active_calls.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!a || !a->ssl)
        return 0;
    *out = *a;
    a->ssl = 0;
    return 1;
}
#else
BPF_HASH(active_calls, u64, struct call_args_t, 16384);

static __always_inline void save_args(struct call_args_t *args) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    active_calls.update(&pid_tgid, args);
}

static __always_inline int take_args(struct call_args_t *out) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct call_args_t *a = active_calls.lookup(&pid_tgid);
    if (!a)
        return 0;
    *out = *a;
    active_calls.delete(&pid_tgid);
    return 1;
}
#endif

/* Running totals, per CPU, summed by the recorder. */
#define CTR_RECORDS 0          /* records written to the ring buffer */
#define CTR_BYTES 1            /* plaintext bytes written to the ring buffer */
#define CTR_DROPPED_RECORDS 2  /* records the ring buffer had no room for */
#define CTR_DROPPED_BYTES 3    /* plaintext bytes lost because the ring buffer was full */
#define CTR_TRUNCATED_BYTES 4  /* plaintext bytes beyond the per-call capture limit */
#define CTR_FAULT_BYTES 5      /* plaintext bytes bpf_probe_read_user could not read */
#define CTR_CALLS 6            /* SSL read/write calls that moved bytes */
#define CTR_COUNT 7
/* One struct, looked up once per call: counting into map memory (not locals) keeps the verifier
 * from tracking a different constant per path through the chunk loop, which it cannot prune. */
struct counters_t {
    u64 v[CTR_COUNT];
};
BPF_PERCPU_ARRAY(counters, struct counters_t, 1);

/* Capture filters, filled by the recorder. filter_flags[0] bit 0: only pids in pid_filter;
 * bit 1: only comms in comm_filter; bit 2: only cgroups in cgroup_filter. */
BPF_ARRAY(filter_flags, u32, 1);
BPF_HASH(pid_filter, u32, u8, 4096);
struct comm_key_t {
    char comm[16];
};
BPF_HASH(comm_filter, struct comm_key_t, u8, 1024);
BPF_HASH(cgroup_filter, u64, u8, 4096);

static __always_inline void count(u32 idx, u64 n) {
    u32 zero = 0;
    struct counters_t *c = counters.lookup(&zero);
    if (c && idx < CTR_COUNT)
        c->v[idx] += n;
}

static __always_inline int wanted(u32 pid) {
    if (pid == RECORDER_PID)
        return 0;
    u32 zero = 0;
    u32 *flags = filter_flags.lookup(&zero);
    if (!flags || *flags == 0)
        return 1;
    if ((*flags & 1) && !pid_filter.lookup(&pid))
        return 0;
    if (*flags & 2) {
        struct comm_key_t ck = {};
        bpf_get_current_comm(&ck.comm, sizeof(ck.comm));
        if (!comm_filter.lookup(&ck))
            return 0;
    }
    if (*flags & 4) {
        u64 cg = bpf_get_current_cgroup_id();
        if (!cgroup_filter.lookup(&cg))
            return 0;
    }
    return 1;
}

static __always_inline struct conn_t *conn_get(u64 ssl, u32 pid, int *created) {
    struct conn_key_t key = {.ssl = ssl, .pid = pid};
    struct conn_t *c = conns.lookup(&key);
    *created = 0;
    if (c)
        return c;
    u32 zero = 0;
    u64 *g = generation.lookup(&zero);
    if (!g)
        return 0;
    struct conn_t fresh = {};
    fresh.gen = __sync_fetch_and_add(g, 1);
    conns.insert(&key, &fresh);
    *created = 1;
    return conns.lookup(&key);
}

static __always_inline void fill_header(struct record_header *h, u64 ssl, u64 gen, u8 kind, u8 dir,
                                        u8 func, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    h->ts_mono_ns = bpf_ktime_get_ns();
    h->ssl = ssl;
    h->conn_gen = gen;
    h->cgroup_id = bpf_get_current_cgroup_id();
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->uid = (u32)bpf_get_current_uid_gid();
    h->lib_id = lib_id;
    h->kind = kind;
    h->dir = dir;
    h->func = func;
    h->stack = STACK_OPENSSL;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

/* A header-only record (OPEN, CLOSE, GAP). */
static __always_inline void emit_meta(struct record_header *h) {
    if (records.ringbuf_output(h, sizeof(*h), BPF_RB_NO_WAKEUP) == 0)
        count(CTR_RECORDS, 1);
    else
        count(CTR_DROPPED_RECORDS, 1);
}

static __always_inline void emit_gap(struct record_header *h, u64 offset, u64 missing, u8 reason) {
    h->kind = KIND_GAP;
    h->func = reason;
    h->offset = offset;
    h->len = missing;
    emit_meta(h);
}

/* One chunk as a DATA record of size class `cls` (a constant once inlined): 0 on success, else a
 * GAP_* reason. */
static __always_inline u8 emit_chunk_class(struct record_header *h, u32 n, const void *src,
                                           const u32 cls) {
    u8 *r = records.ringbuf_reserve(sizeof(struct record_header) + cls);
    if (!r)
        return GAP_RINGBUF_FULL;
    __builtin_memcpy(r, h, sizeof(struct record_header));
    /* equals n for 1 <= n <= cls; written so that the verifier can see the bound */
    u32 size = ((n - 1) & (cls - 1)) + 1;
    if (bpf_probe_read_user(r + sizeof(struct record_header), size, src) != 0) {
        records.ringbuf_discard(r, BPF_RB_NO_WAKEUP);
        return GAP_READ_FAULT;
    }
    records.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
    return 0;
}

static __always_inline u8 emit_chunk(struct record_header *h, u32 n, const void *src) {
    if (n <= CLASS_1)
        return emit_chunk_class(h, n, src, CLASS_1);
    if (n <= CLASS_2)
        return emit_chunk_class(h, n, src, CLASS_2);
    if (n <= CLASS_3)
        return emit_chunk_class(h, n, src, CLASS_3);
    if (n <= CLASS_4)
        return emit_chunk_class(h, n, src, CLASS_4);
    return GAP_OVER_LIMIT; /* not reached: n <= CHUNK_SIZE */
}

/* Kernel memory at an offset the recorder read from the running kernel's BTF (OFF_* defines,
 * recorder/capture/kernel_btf.py), never from the headers bcc compiles with, which may belong to
 * another kernel. 0 when the base is 0 or the read fails. */
static __always_inline u64 read_ptr(u64 base, u32 off) {
    u64 v = 0;
    if (base)
        bpf_probe_read_kernel(&v, sizeof(v), (void *)(base + off));
    return v;
}

static __always_inline u32 read_u32(u64 base, u32 off) {
    u32 v = 0;
    if (base)
        bpf_probe_read_kernel(&v, sizeof(v), (void *)(base + off));
    return v;
}

#ifdef OFF_FDTABLE_FD
/* The struct file of one of the current process's descriptors (0: none). */
static __always_inline u64 fd_file(u32 fd) {
    u64 fdt = read_ptr(read_ptr((u64)bpf_get_current_task(), OFF_TASK_STRUCT_FILES), OFF_FILES_STRUCT_FDT);
    if (!fdt || fd >= read_u32(fdt, OFF_FDTABLE_MAX_FDS))
        return 0;
    return read_ptr(read_ptr(fdt, OFF_FDTABLE_FD), fd * 8);
}
#endif

/* Peer addresses from connect(), keyed by (tgid << 32 | fd), and the last connect() of each thread
 * for libraries that are never told the fd (memory BIOs). LRU: entries of sockets never wrapped in
 * TLS age out. */
struct peer_t {
    u16 family;
    u16 port;
    u8 addr[16];
};
struct thread_connect_t {
    s32 fd;
    struct peer_t peer;
};
BPF_TABLE("lru_hash", u64, struct peer_t, connects, 65536);
BPF_TABLE("lru_hash", u32, struct thread_connect_t, thread_connects, 65536);

#define AF_INET_ 2
#define AF_INET6_ 10
#define MSG_PEEK_ 2

#ifdef PLAIN_CAPTURE
/* Plaintext HTTP to in-cluster model servers: sockets whose server port is in scope (plain_ports,
 * from the configuration) are tracked from connect() (client end) or accept() (server end); their
 * bytes are captured from the read/write family of system calls once the request direction's
 * first bytes are an HTTP/1.x method or the HTTP/2 preface, and never otherwise (TLS on an in-scope
 * port, another protocol: the socket is dropped at its first bytes). A read or write of a process
 * without tracked sockets costs one array lookup (plain_maybe). Records are those of TLS capture: the connection key is
 * PLAIN_KEY(fd), lib_id PLAIN_LIB_ID, stack STACK_PLAIN. */
#define PLAIN_LIB_ID 65535
#define PLAIN_KEY(fd) ((1ULL << 63) | (u32)(fd))
#define PLAIN_UNDECIDED 0
#define PLAIN_HTTP 1
#define PLAIN_OTHER 2
#define SIDE_CLIENT 1
#define SIDE_SERVER 2
BPF_HASH(plain_ports, u16, u8, 1024);
/* server addresses in scope (IPv4 as IPv4-mapped IPv6), when plain_flags[0] bit 0 says there are any */
struct plain_prefix_t {
    u32 prefixlen;
    u8 addr[16];
};
BPF_LPM_TRIE(plain_addresses, struct plain_prefix_t, u8, 1024);
BPF_ARRAY(plain_flags, u32, 1);
struct plain_sock_t {
    u8 state;
    u8 side;
};
BPF_TABLE("lru_hash", u64, struct plain_sock_t, plain_socks, 65536);
/* How many tracked sockets the processes whose tgid ends in these 16 bits have: a read or write of a
 * process with none stops at this array lookup, without hashing (the common case by far). Counted
 * up at tracking, down at close(); a process that exits with sockets open leaves its count up,
 * which only costs a hash lookup later, never a missed socket. */
BPF_ARRAY(plain_tgids, u32, 65536);

static __always_inline int plain_maybe(u64 pid_tgid) {
    u32 idx = (pid_tgid >> 32) & 0xffff;
    u32 *n = plain_tgids.lookup(&idx);
    return n && *n;
}

static __always_inline void plain_track(u32 fd, u8 side) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u64 key = (pid_tgid & 0xffffffff00000000ULL) | fd;
    struct plain_sock_t sock = {.state = PLAIN_UNDECIDED, .side = side};
    if (!plain_socks.lookup(&key)) {
        u32 idx = (pid_tgid >> 32) & 0xffff;
        u32 *n = plain_tgids.lookup(&idx);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
    plain_socks.update(&key, &sock);
    struct conn_key_t ck = {.ssl = PLAIN_KEY(fd), .pid = pid_tgid >> 32};
    conns.delete(&ck); /* a descriptor number reused: a new connection */
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    struct peer_t p = {};
    const u8 *sa = (const u8 *)args->uservaddr;
    if (bpf_probe_read_user(&p.family, sizeof(p.family), sa) != 0)
        return 0;
    u16 port_be = 0;
    if (p.family == AF_INET_) {
        bpf_probe_read_user(&port_be, 2, sa + 2);
        bpf_probe_read_user(p.addr, 4, sa + 4); /* sockaddr_in.sin_addr */
    } else if (p.family == AF_INET6_) {
        bpf_probe_read_user(&port_be, 2, sa + 2);
        bpf_probe_read_user(p.addr, 16, sa + 8); /* sockaddr_in6.sin6_addr, after flowinfo */
    } else {
        return 0; /* unix sockets and the like: never TLS to a provider */
    }
    p.port = (port_be >> 8) | ((port_be & 0xff) << 8);
    u64 key = (pid_tgid & 0xffffffff00000000ULL) | (u32)args->fd;
    connects.update(&key, &p);
    struct thread_connect_t tc = {.fd = (s32)args->fd, .peer = p};
    u32 tid = (u32)pid_tgid;
    thread_connects.update(&tid, &tc);
#ifdef PLAIN_CAPTURE
    if (plain_ports.lookup(&p.port))
        plain_track(args->fd, SIDE_CLIENT);
#endif
    return 0;
}

static __always_inline void emit_socket(struct record_header *h, s32 fd, struct peer_t *peer, u8 source,
                                        struct peer_t *local) {
    struct {
        struct record_header h;
        struct socket_info s;
    } r = {};
    r.h = *h;
    r.h.kind = KIND_SOCKET;
    r.h.len = sizeof(struct socket_info);
    r.s.fd = fd;
    r.s.source = source;
    if (peer) {
        r.s.family = peer->family;
        r.s.port = peer->port;
        __builtin_memcpy(r.s.addr, peer->addr, 16);
    }
    if (local) {
        r.s.local_port = local->port;
        __builtin_memcpy(r.s.local_addr, local->addr, 16);
    }
    if (records.ringbuf_output(&r, sizeof(r), BPF_RB_NO_WAKEUP) == 0)
        count(CTR_RECORDS, 1);
    else
        count(CTR_DROPPED_RECORDS, 1);
}

static __always_inline int on_entry(struct pt_regs *ctx, int has_len_ptr, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    struct call_args_t args = {};
    args.ssl = PT_REGS_PARM1(ctx);
    args.buf = PT_REGS_PARM2(ctx);
    /* SSL_write_ex(ssl, buf, num, *written) / SSL_read_ex(ssl, buf, num, *readbytes) */
    args.len_ptr = has_len_ptr ? PT_REGS_PARM4(ctx) : 0;
    args.lib_id = lib_id;
    if (args.ssl)
        save_args(&args);
    return 0;
}

/* Go's register ABI (amd64 since Go 1.17, arm64 since 1.18): the receiver and arguments in the first
 * integer registers, the first result in the first, and the running goroutine (g) in a fixed one. */
#if defined(bpf_target_x86)
#define GO_PARM1(x) ((x)->ax)
#define GO_PARM2(x) ((x)->bx)
#define GO_PARM3(x) ((x)->cx)
#define GO_RET1(x) ((x)->ax)
#define GO_G(x) ((x)->r14)
#elif defined(bpf_target_arm64)
#define GO_PARM1(x) ((x)->regs[0])
#define GO_PARM2(x) ((x)->regs[1])
#define GO_PARM3(x) ((x)->regs[2])
#define GO_RET1(x) ((x)->regs[0])
#define GO_G(x) ((x)->regs[28])
#else
#define GO_PARM1(x) 0
#define GO_PARM2(x) 0
#define GO_PARM3(x) 0
#define GO_RET1(x) 0
#define GO_G(x) 0
#endif

/* The socket under a Go *tls.Conn. Its first field is the net.Conn it wraps, an interface (itab,
 * data); net/http's data is a *net.TCPConn, whose first word is its *netFD, which starts with a
 * poll.FD: fdMutex (16 bytes), then Sysfd. These layouts are the same in every Go release with the
 * register ABI. A net.Conn that is not a TCPConn yields some other number, which the recorder's
 * socket lookup rejects unless it is one of the process's sockets: the record's source says the fd
 * was read this way. */
static __always_inline void go_socket(struct record_header *h, u64 conn, u64 pid_tgid) {
    u64 tcp_conn = 0, net_fd = 0;
    s64 fd = -1;
    if (bpf_probe_read_user(&tcp_conn, sizeof(tcp_conn), (void *)(conn + 8)) != 0 || !tcp_conn)
        return;
    if (bpf_probe_read_user(&net_fd, sizeof(net_fd), (void *)tcp_conn) != 0 || !net_fd)
        return;
    if (bpf_probe_read_user(&fd, sizeof(fd), (void *)(net_fd + 16)) != 0 || fd < 0 || fd > 0x7fffffff)
        return;
    u64 key = (pid_tgid & 0xffffffff00000000ULL) | (u32)fd;
    struct peer_t *p = connects.lookup(&key);
    struct peer_t copy = {};
    if (p)
        copy = *p;
    emit_socket(h, (s32)fd, p ? &copy : 0, SOCK_SRC_GO_CONN, 0);
}

/* Copy what one call moved (`total` bytes at `buf`) into the ring buffer, chunk by chunk, each with
 * its stream offset. Shared by OpenSSL's return probes and Go's: one copy of the loop the verifier
 * works hardest on. `stack` says whose connection `ssl` is: a Go *tls.Conn learns its socket from the
 * Conn itself, an OpenSSL SSL* without an fd from the thread's last connect(); a plaintext one wrote
 * its socket when it was recognized as HTTP. */
static __always_inline int capture_call(u64 ssl, u64 buf, u64 total, u8 dir, u8 func, u16 lib_id, u8 stack) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    int created;
    struct conn_t *c = conn_get(ssl, pid_tgid >> 32, &created);
    if (!c)
        return 0;
    u64 base = __sync_fetch_and_add(&c->off[dir & 1], total);
    u64 gen = c->gen;

    u32 zero = 0;
    struct record_header h = {};
    fill_header(&h, ssl, gen, KIND_DATA, dir, func, lib_id);
    h.stack = stack;
    if (!c->socket_seen) {
        c->socket_seen = 1; /* plaintext: written when the connection was recognized as HTTP */
        if (stack == STACK_GO) {
            go_socket(&h, ssl, pid_tgid);
        } else if (stack == STACK_OPENSSL) {
            /* the library was never given an fd (memory BIOs: Node, asyncio, curl's own BIO): the
             * socket is the one this thread connect()ed last, an inference the record says it is */
            u32 tid = (u32)pid_tgid;
            struct thread_connect_t *tc = thread_connects.lookup(&tid);
            if (tc) {
                struct thread_connect_t copy = *tc;
                thread_connects.delete(&tid);
                emit_socket(&h, copy.fd, &copy.peer, SOCK_SRC_THREAD_CONNECT, 0);
            }
        }
    }
    h.call_len = total;

    struct counters_t *ctr = counters.lookup(&zero);
    if (!ctr)
        return 0;
    ctr->v[CTR_CALLS] += 1;
    /* Copy chunk by chunk. The first failure ends the loop: the rest of the call becomes one gap
     * record, which keeps records in stream order and the verifier's work linear in MAX_CHUNKS. */
    u64 done = 0;
    u8 reason = GAP_OVER_LIMIT;
    for (int i = 0; i < MAX_CHUNKS; i++) {
        u64 left = total - done;
        u32 n = left > CHUNK_SIZE ? CHUNK_SIZE : left;
        h.offset = base + done;
        h.len = n;
        u8 failed = emit_chunk(&h, n, (void *)(buf + done));
        if (failed) {
            reason = failed;
            break;
        }
        ctr->v[CTR_RECORDS] += 1;
        ctr->v[CTR_BYTES] += n;
        if (left <= CHUNK_SIZE) {
            /* stated outright: the verifier cannot infer done == total from done += left */
            done = total;
            break;
        }
        done += n;
    }
    if (done < total) {
        u64 missing = total - done;
        if (reason == GAP_RINGBUF_FULL) {
            ctr->v[CTR_DROPPED_RECORDS] += 1;
            ctr->v[CTR_DROPPED_BYTES] += missing;
        } else if (reason == GAP_READ_FAULT) {
            ctr->v[CTR_FAULT_BYTES] += missing;
        } else {
            ctr->v[CTR_TRUNCATED_BYTES] += missing;
        }
        /* if even this small record finds no room, the recorder sees the offset jump and writes
         * the gap itself */
        emit_gap(&h, base + done, missing, reason);
    }
    return 0;
}

static __always_inline int on_return(struct pt_regs *ctx, u8 dir, u8 func) {
    struct call_args_t a = {};
    if (!take_args(&a))
        return 0;

    int ret = (int)PT_REGS_RC(ctx); /* SSL_read/SSL_write return int: -1 is 0x00000000ffffffff in rax */
    u64 total = 0;
    if (a.len_ptr) {
        /* _ex variants return 1 on success and store the byte count */
        if (ret != 1)
            return 0;
        size_t moved = 0;
        if (bpf_probe_read_user(&moved, sizeof(moved), (void *)a.len_ptr) != 0)
            return 0;
        total = moved;
    } else {
        if (ret <= 0)
            return 0;
        total = ret;
    }
    if (total == 0)
        return 0;
    return capture_call(a.ssl, a.buf, total, dir, func, (u16)a.lib_id, STACK_OPENSSL);
}

/* A handshake entry point: the connection is seen from its first byte. */
static __always_inline int open_conn(u64 ssl, u8 func, u16 lib_id, u8 stack) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    int created;
    struct conn_t *c = conn_get(ssl, pid_tgid >> 32, &created);
    /* SSL_do_handshake is called repeatedly on non-blocking sockets: announce once, and only if no
     * byte has moved yet (a handshake later in a connection is a renegotiation) */
    if (!c || c->opened || c->off[0] || c->off[1])
        return 0;
    c->opened = 1;
    struct record_header h = {};
    fill_header(&h, ssl, c->gen, KIND_OPEN, 0, func, lib_id);
    h.stack = stack;
    emit_meta(&h);
    return 0;
}

static __always_inline int on_open(struct pt_regs *ctx, u8 func, u16 lib_id) {
    return open_conn(PT_REGS_PARM1(ctx), func, lib_id, STACK_OPENSSL);
}

/* SSL_set_fd(ssl, fd) and the rfd/wfd variants: the connection's socket, with the peer address
 * its connect() used, when we saw one. */
static __always_inline int on_set_fd(struct pt_regs *ctx, u8 func, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    u64 ssl = PT_REGS_PARM1(ctx);
    s32 fd = (s32)PT_REGS_PARM2(ctx);
    int created;
    struct conn_t *c = conn_get(ssl, pid_tgid >> 32, &created);
    if (!c)
        return 0;
    struct record_header h = {};
    fill_header(&h, ssl, c->gen, KIND_SOCKET, 0, func, lib_id);
    u64 key = (pid_tgid & 0xffffffff00000000ULL) | (u32)fd;
    struct peer_t *p = connects.lookup(&key);
    struct peer_t copy = {};
    if (p)
        copy = *p;
    u32 tid = (u32)pid_tgid;
    struct thread_connect_t *tc = thread_connects.lookup(&tid);
    if (tc && tc->fd == fd)
        thread_connects.delete(&tid); /* claimed: not for another connection's fallback */
    c->socket_seen = 1;
    emit_socket(&h, fd, p ? &copy : 0, SOCK_SRC_SET_FD, 0);
    return 0;
}

/* SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, name): what
 * SSL_set_tlsext_host_name expands to. The name the client asked for, before any byte moves. */
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define SNI_MAX 256
static __always_inline int on_ctrl(struct pt_regs *ctx, u16 lib_id) {
    if (PT_REGS_PARM2(ctx) != SSL_CTRL_SET_TLSEXT_HOSTNAME || PT_REGS_PARM3(ctx) != 0)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    u64 ssl = PT_REGS_PARM1(ctx);
    const char *name = (const char *)PT_REGS_PARM4(ctx);
    if (!name)
        return 0;
    int created;
    struct conn_t *c = conn_get(ssl, pid_tgid >> 32, &created);
    if (!c)
        return 0;
    u8 *r = records.ringbuf_reserve(sizeof(struct record_header) + SNI_MAX);
    if (!r) {
        count(CTR_DROPPED_RECORDS, 1);
        return 0;
    }
    struct record_header h = {};
    fill_header(&h, ssl, c->gen, KIND_SNI, 0, FN_SSL_CTRL, lib_id);
    long n = bpf_probe_read_user_str(r + sizeof(struct record_header), SNI_MAX, name);
    h.len = n > 0 ? n - 1 : 0;
    __builtin_memcpy(r, &h, sizeof(h));
    records.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
    count(CTR_RECORDS, 1);
    /* a client names the server before its handshake: the connection is seen from its first byte,
     * whether or not the library calls a handshake function we probe (node drives its handshakes
     * from SSL_read/SSL_write) */
    if (!c->opened && !c->off[0] && !c->off[1]) {
        c->opened = 1;
        h.kind = KIND_OPEN;
        h.len = 0;
        emit_meta(&h);
    }
    return 0;
}

/* The connection ended: its final stream lengths, and its state is dropped (the pointer may be reused). */
static __always_inline int close_conn(u64 ssl, u8 func, u16 lib_id, u8 stack) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct conn_key_t key = {.ssl = ssl, .pid = pid_tgid >> 32};
    struct conn_t *c = conns.lookup(&key);
    if (!c)
        return 0;
    struct record_header h = {};
    fill_header(&h, ssl, c->gen, KIND_CLOSE, 0, func, lib_id);
    h.stack = stack;
    h.offset = c->off[DIR_EGRESS];
    h.call_len = c->off[DIR_INGRESS];
    conns.delete(&key);
    emit_meta(&h);
    return 0;
}

static __always_inline int on_free(struct pt_regs *ctx, u16 lib_id) {
    return close_conn(PT_REGS_PARM1(ctx), FN_SSL_FREE, lib_id, STACK_OPENSSL);
}

#ifdef PLAIN_CAPTURE
/* A read or write on a tracked socket: the system call's descriptor and buffer argument(s). */
#define HOW_BUFFER 0
#define HOW_IOVEC 1  /* ptr: struct iovec[count] */
#define HOW_MSGHDR 2 /* ptr: struct user_msghdr */
struct plain_call_t {
    u64 ptr;
    u32 fd;
    u32 count;
    u8 how;
    u8 dir;
    u8 func;
};
/* What the copying program (plain_copy, reached by tail call) is to copy: one buffer, or the iovecs
 * of a vectored call one per tail call (the chunk loop is compiled once, not once per syscall). */
struct plain_work_t {
    u64 key;
    u64 buf;
    u64 iov;
    u64 left;
    u32 n_iov;
    u32 idx;
    u8 dir;
    u8 func;
};
BPF_PERCPU_ARRAY(plain_work, struct plain_work_t, 1);
BPF_PROG_ARRAY(plain_tail, 1);
#define MAX_IOVECS 32 /* tail calls per system call; bytes of further iovecs become a gap */

/* The request direction's first four bytes: an HTTP/1.x method, or the h2c preface "PRI ". */
#define W4(a, b, c, d) ((u32)(a) | (u32)(b) << 8 | (u32)(c) << 16 | (u32)(d) << 24)
static __always_inline int http_start(u32 w) {
    return w == W4('G', 'E', 'T', ' ') || w == W4('P', 'O', 'S', 'T') || w == W4('P', 'U', 'T', ' ') ||
           w == W4('H', 'E', 'A', 'D') || w == W4('D', 'E', 'L', 'E') || w == W4('P', 'A', 'T', 'C') ||
           w == W4('O', 'P', 'T', 'I') || w == W4('P', 'R', 'I', ' ');
}

/* Both ends of a socket from the kernel's struct sock_common. Returns the family (0: unknown). */
static __always_inline u16 sock_ends(u32 fd, struct peer_t *peer, struct peer_t *local) {
    u64 sk = read_ptr(read_ptr(fd_file(fd), OFF_FILE_PRIVATE_DATA), OFF_SOCKET_SK);
    if (!sk)
        return 0;
    u64 common = sk + OFF_SOCK___SK_COMMON;
    u16 family = 0, dport = 0, num = 0;
    bpf_probe_read_kernel(&family, 2, (void *)(common + OFF_SOCK_COMMON_SKC_FAMILY));
    bpf_probe_read_kernel(&dport, 2, (void *)(common + OFF_SOCK_COMMON_SKC_DPORT));
    bpf_probe_read_kernel(&num, 2, (void *)(common + OFF_SOCK_COMMON_SKC_NUM));
    peer->family = family;
    local->family = family;
    peer->port = (dport >> 8) | ((dport & 0xff) << 8);
    local->port = num;
    if (family == AF_INET_) {
        bpf_probe_read_kernel(peer->addr, 4, (void *)(common + OFF_SOCK_COMMON_SKC_DADDR));
        bpf_probe_read_kernel(local->addr, 4, (void *)(common + OFF_SOCK_COMMON_SKC_RCV_SADDR));
    } else if (family == AF_INET6_) {
        bpf_probe_read_kernel(peer->addr, 16, (void *)(common + OFF_SOCK_COMMON_SKC_V6_DADDR));
        bpf_probe_read_kernel(local->addr, 16, (void *)(common + OFF_SOCK_COMMON_SKC_V6_RCV_SADDR));
    } else {
        return 0;
    }
    return family;
}

/* Whether the server's address is in scope (plain_addresses; any when none is configured). */
static __always_inline int server_in_scope(struct peer_t *server) {
    u32 zero = 0;
    u32 *flags = plain_flags.lookup(&zero);
    if (!flags || !(*flags & 1))
        return 1;
    struct plain_prefix_t key = {.prefixlen = 128};
    if (server->family == AF_INET_) {
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        __builtin_memcpy(&key.addr[12], server->addr, 4);
    } else {
        __builtin_memcpy(key.addr, server->addr, 16);
    }
    return plain_addresses.lookup(&key) != 0;
}

/* The connection was just recognized as HTTP: its open record, then its socket (both ends). */
static __always_inline void plain_open(u32 fd, u8 side, struct peer_t *peer, struct peer_t *local) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    int created;
    struct conn_t *c = conn_get(PLAIN_KEY(fd), pid_tgid >> 32, &created);
    if (!c)
        return;
    c->opened = 1;
    c->socket_seen = 1;
    struct record_header h = {};
    fill_header(&h, PLAIN_KEY(fd), c->gen, KIND_OPEN, 0, side == SIDE_CLIENT ? FN_SYS_CONNECT : FN_SYS_ACCEPT,
                PLAIN_LIB_ID);
    h.stack = STACK_PLAIN;
    emit_meta(&h);
    emit_socket(&h, (s32)fd, peer, SOCK_SRC_SYSCALL, local);
}

/* `ret` bytes moved by a read or write of the process's (pid_tgid's) descriptor call.fd: captured if
 * it is a tracked socket recognized as HTTP (decided here, by the request's first bytes). */
static __always_inline int plain_call(void *ctx, u64 pid_tgid, struct plain_call_t call, long ret) {
    if (ret <= 0)
        return 0;
    u64 key = (pid_tgid & 0xffffffff00000000ULL) | call.fd;
    struct plain_sock_t *sock = plain_socks.lookup(&key);
    if (!sock || sock->state == PLAIN_OTHER)
        return 0;
    u64 buf = 0, iov = 0;
    u32 n_iov = 0;
    if (call.how == HOW_BUFFER) {
        buf = call.ptr;
    } else if (call.how == HOW_IOVEC) {
        iov = call.ptr;
        n_iov = call.count;
    } else {
        u64 len = 0; /* struct user_msghdr: msg_iov at 16, msg_iovlen at 24 */
        bpf_probe_read_user(&iov, 8, (void *)(call.ptr + 16));
        bpf_probe_read_user(&len, 8, (void *)(call.ptr + 24));
        n_iov = (u32)len;
    }
    if (sock->state == PLAIN_UNDECIDED) {
        /* decided by the request's first bytes: the client's first write, the server's first read */
        if (call.dir != (sock->side == SIDE_CLIENT ? DIR_EGRESS : DIR_INGRESS))
            return 0;
        u64 first = buf;
        if (!first && iov)
            bpf_probe_read_user(&first, 8, (void *)iov);
        u32 head = 0;
        if (ret < 4 || bpf_probe_read_user(&head, 4, (void *)first) != 0 || !http_start(head)) {
            sock->state = PLAIN_OTHER;
            return 0;
        }
        struct peer_t peer = {}, local = {};
        if (!sock_ends(call.fd, &peer, &local) ||
            !server_in_scope(sock->side == SIDE_CLIENT ? &peer : &local)) {
            sock->state = PLAIN_OTHER;
            return 0;
        }
        sock->state = PLAIN_HTTP;
        plain_open(call.fd, sock->side, &peer, &local);
    }
    if (sock->state != PLAIN_HTTP)
        return 0;
    u32 zero = 0;
    struct plain_work_t *w = plain_work.lookup(&zero);
    if (!w)
        return 0;
    w->key = PLAIN_KEY(call.fd);
    w->buf = buf;
    w->iov = iov;
    w->left = (u64)ret;
    w->n_iov = n_iov;
    w->idx = 0;
    w->dir = call.dir;
    w->func = call.func;
    plain_tail.call(ctx, 0);
    return 0;
}

/* Copies the next buffer of plain_work (reached by tail call from plain_call's tracepoints). */
int plain_copy(void *ctx) {
    u32 zero = 0;
    struct plain_work_t *w = plain_work.lookup(&zero);
    if (!w || !w->left)
        return 0;
    u64 buf = w->buf, len = w->left;
    if (w->iov) {
        struct {
            u64 base;
            u64 len;
        } v = {};
        if (w->idx >= w->n_iov || w->idx >= MAX_IOVECS ||
            bpf_probe_read_user(&v, sizeof(v), (void *)(w->iov + (u64)w->idx * 16)) != 0) {
            buf = 0; /* the rest cannot be reached: a gap, through the copy's own failure path */
        } else {
            buf = v.base;
            len = v.len < w->left ? v.len : w->left;
            w->idx += 1;
        }
    }
    w->left -= len;
    u64 left = w->left;
    capture_call(w->key, buf, len, w->dir, w->func, PLAIN_LIB_ID, STACK_PLAIN);
    if (left)
        plain_tail.call(ctx, 0);
    return 0;
}

static __always_inline int plain_accepted(long ret) {
    if (ret < 0 || !wanted(bpf_get_current_pid_tgid() >> 32))
        return 0;
    struct peer_t peer = {}, local = {};
    if (sock_ends((u32)ret, &peer, &local) && plain_ports.lookup(&local.port))
        plain_track((u32)ret, SIDE_SERVER);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return plain_accepted(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return plain_accepted(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!plain_maybe(pid_tgid))
        return 0;
    u64 key = (pid_tgid & 0xffffffff00000000ULL) | (u32)args->fd;
    struct plain_sock_t *sock = plain_socks.lookup(&key);
    if (!sock)
        return 0;
    if (sock->state == PLAIN_HTTP)
        close_conn(PLAIN_KEY(args->fd), FN_SYS_CLOSE, PLAIN_LIB_ID, STACK_PLAIN);
    if (plain_socks.delete(&key) == 0) {
        u32 idx = (pid_tgid >> 32) & 0xffff;
        u32 *n = plain_tgids.lookup(&idx);
        if (n && *n)
            __sync_fetch_and_add(n, -1);
    }
    return 0;
}

#if defined(bpf_target_x86)
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define SC_NR(r) (&(r)->orig_ax)
#define SC_ARG0(r) (&(r)->di)
#define SC_ARG1(r) (&(r)->si)
#define SC_ARG2(r) (&(r)->dx)
#define SC_ARG3(r) (&(r)->r10)
#elif defined(bpf_target_arm64)
#define NR_READ 63
#define NR_WRITE 64
#define NR_READV 65
#define NR_WRITEV 66
#define NR_SENDTO 206
#define NR_RECVFROM 207
#define NR_SENDMSG 211
#define NR_RECVMSG 212
#define SC_NR(r) (&(r)->syscallno)
#define SC_ARG0(r) (&(r)->orig_x0)
#define SC_ARG1(r) (&(r)->regs[1])
#define SC_ARG2(r) (&(r)->regs[2])
#define SC_ARG3(r) (&(r)->regs[3])
#endif

/* Which call of the read/write family system call number `nr` is (0: none of them). */
static __always_inline int plain_syscall(u64 nr, struct plain_call_t *call) {
    call->how = HOW_BUFFER;
    call->dir = DIR_EGRESS;
    switch (nr) {
    case NR_WRITE: call->func = FN_SYS_WRITE; break;
    case NR_SENDTO: call->func = FN_SYS_SENDTO; break;
    case NR_READ: call->func = FN_SYS_READ; call->dir = DIR_INGRESS; break;
    case NR_RECVFROM: call->func = FN_SYS_RECVFROM; call->dir = DIR_INGRESS; break;
    case NR_WRITEV: call->func = FN_SYS_WRITEV; call->how = HOW_IOVEC; break;
    case NR_READV: call->func = FN_SYS_READV; call->how = HOW_IOVEC; call->dir = DIR_INGRESS; break;
    case NR_SENDMSG: call->func = FN_SYS_SENDMSG; call->how = HOW_MSGHDR; break;
    case NR_RECVMSG: call->func = FN_SYS_RECVMSG; call->how = HOW_MSGHDR; call->dir = DIR_INGRESS; break;
    default: return 0;
    }
    return 1;
}

/* The descriptor and buffer arguments of the system call, read from `regs` (the caller's registers). */
static __always_inline void plain_args(struct pt_regs *regs, struct plain_call_t *call) {
    u64 fd = 0, ptr = 0, count = 0;
    bpf_probe_read_kernel(&fd, sizeof(fd), SC_ARG0(regs));
    bpf_probe_read_kernel(&ptr, sizeof(ptr), SC_ARG1(regs));
    bpf_probe_read_kernel(&count, sizeof(count), SC_ARG2(regs));
    call->fd = (u32)fd;
    call->ptr = ptr;
    call->count = call->how == HOW_MSGHDR ? 0 : (u32)count;
}

#ifdef PLAIN_SOCKET_TRACEPOINTS
/* Sends and receives are seen at the socket layer's own tracepoints (sock_send_length and
 * sock_recv_length, Linux 6.3), which fire after every sendmsg/recvmsg of a socket with its result:
 * file and pipe I/O never reaches them, so it costs nothing. The call's descriptor and buffer are
 * the system call's arguments, in the user registers saved at its entry; a send or receive made by
 * other means (sendfile, splice, io_uring, sendmmsg) is not one of the family and is left alone. */
static __always_inline int plain_socket_call(void *ctx, long ret, u64 flags, u8 dir) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (ret <= 0 || !plain_maybe(pid_tgid))
        return 0;
    if (flags & MSG_PEEK_)
        return 0; /* the same bytes are read again */
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    u64 nr = 0;
    bpf_probe_read_kernel(&nr, sizeof(nr), SC_NR(regs));
    struct plain_call_t call = {};
    if (!plain_syscall(nr, &call) || call.dir != dir)
        return 0;
    plain_args(regs, &call);
    return plain_call(ctx, pid_tgid, call, ret);
}

RAW_TRACEPOINT_PROBE(sock_send_length) { return plain_socket_call(ctx, (int)ctx->args[1], ctx->args[2], DIR_EGRESS); }
RAW_TRACEPOINT_PROBE(sock_recv_length) { return plain_socket_call(ctx, (int)ctx->args[1], ctx->args[2], DIR_INGRESS); }
#else
/* Before Linux 6.3 (no socket tracepoints) the read/write family is hooked at the raw syscall
 * tracepoints, which every system call of the node passes: a call of a process with no tracked
 * socket ends at one array lookup (the per-syscall tracepoints build a record of the arguments for
 * every call first: +21% CPU on 4 KiB file writes, measured). The entry saves the arguments of a
 * call on a tracked socket for the exit, which knows how many bytes moved. */
BPF_HASH(plain_calls, u64, struct plain_call_t, 16384);

RAW_TRACEPOINT_PROBE(sys_enter) {
    struct plain_call_t call = {};
    if (!plain_syscall(ctx->args[1], &call))
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!plain_maybe(pid_tgid))
        return 0; /* every other read and write on the node ends here */
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    plain_args(regs, &call);
    u64 flags = 0; /* recvfrom(fd, buf, len, flags, ...), recvmsg(fd, msg, flags) */
    if (call.func == FN_SYS_RECVFROM)
        bpf_probe_read_kernel(&flags, sizeof(flags), SC_ARG3(regs));
    else if (call.func == FN_SYS_RECVMSG)
        bpf_probe_read_kernel(&flags, sizeof(flags), SC_ARG2(regs));
    if (flags & MSG_PEEK_)
        return 0; /* the same bytes are read again */
    u64 key = (pid_tgid & 0xffffffff00000000ULL) | call.fd;
    struct plain_sock_t *sock = plain_socks.lookup(&key);
    if (!sock || sock->state == PLAIN_OTHER)
        return 0;
    plain_calls.update(&pid_tgid, &call);
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!plain_maybe(pid_tgid))
        return 0;
    struct plain_call_t *p = plain_calls.lookup(&pid_tgid);
    if (!p)
        return 0;
    struct plain_call_t call = *p;
    plain_calls.delete(&pid_tgid);
    return plain_call(ctx, pid_tgid, call, (long)ctx->args[1]);
}
#endif
#endif

/* Go's crypto/tls: Read is probed at entry (the *tls.Conn and the buffer) and at each of its RET
 * instructions (n, the bytes read), never with a uretprobe, which breaks Go's movable stacks; Write
 * at entry only (go_write below). Between the two the call is keyed by its goroutine, not its
 * thread: a goroutine blocked in Read resumes on whichever thread the scheduler picks. LRU: a goroutine that never returns (the
 * program was killed mid-call) cannot fill the map. */
struct go_call_key_t {
    u64 g;
    u32 pid;
    u32 pad;
};
struct go_call_t {
    u64 conn;
    u64 buf;
    u64 lib_id;
};
BPF_TABLE("lru_hash", struct go_call_key_t, struct go_call_t, go_calls, 16384);

/* crypto/tls.(*Conn).Write(b []byte) is captured at its entry, all of b (pointer RBX, length RCX):
 * it writes all of b or fails. At its return the bytes are long on the wire, and the goroutine that
 * made the write system call may wait for a thread before it gets there: a short-lived program can
 * get its answer and exit first, and the request would be lost (measured: 1 to 6 of 20 concurrent
 * Go clients on this 2-core VM). Read must wait for its return: only then is it known what was read. */
static __always_inline int go_write(struct pt_regs *ctx, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    s64 n = (s64)GO_PARM3(ctx);
    if (!GO_PARM1(ctx) || n <= 0)
        return 0;
    return capture_call(GO_PARM1(ctx), GO_PARM2(ctx), (u64)n, DIR_EGRESS, FN_GO_WRITE, lib_id, STACK_GO);
}

static __always_inline int go_entry(struct pt_regs *ctx, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    struct go_call_key_t key = {.g = GO_G(ctx), .pid = pid_tgid >> 32};
    struct go_call_t call = {.conn = GO_PARM1(ctx), .buf = GO_PARM2(ctx), .lib_id = lib_id};
    if (key.g && call.conn)
        go_calls.update(&key, &call);
    return 0;
}

/* The server name a Go client sends: crypto/tls.hostnameInSNI(config.ServerName) returns it (empty for
 * an IP address) inside clientHandshake, on the handshaking goroutine. clientHandshake's entry notes
 * the *tls.Conn per goroutine; each RET of hostnameInSNI (string result: pointer RAX, length RBX)
 * takes it. hostnameInSNI has no other caller in crypto/tls. */
struct go_handshake_t {
    u64 conn;
    u64 lib_id;
};
BPF_TABLE("lru_hash", struct go_call_key_t, struct go_handshake_t, go_handshakes, 4096);

#if defined(bpf_target_x86)
#define GO_RET2(x) ((x)->bx)
#elif defined(bpf_target_arm64)
#define GO_RET2(x) ((x)->regs[1])
#else
#define GO_RET2(x) 0
#endif

static __always_inline int go_client_handshake(struct pt_regs *ctx, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    struct go_call_key_t key = {.g = GO_G(ctx), .pid = pid_tgid >> 32};
    struct go_handshake_t hs = {.conn = GO_PARM1(ctx), .lib_id = lib_id};
    if (key.g && hs.conn)
        go_handshakes.update(&key, &hs);
    return open_conn(hs.conn, FN_GO_CLIENT_HANDSHAKE, lib_id, STACK_GO);
}

/* Go's entry-only probes do their work in shared programs, reached by a tail call from a per-slot stub
 * that hands over the slot's lib_id through per-CPU scratch (the tail call runs at once, on the same
 * CPU): a copy of open_conn/close_conn per slot would add seconds to the start-up compile. */
#define TAIL_GO_CLOSE 0
#define TAIL_GO_CLIENT_HS 1
#define TAIL_GO_SERVER_HS 2
#define TAIL_GO_WRITE 3
BPF_PROG_ARRAY(go_tails, 4);
BPF_PERCPU_ARRAY(tail_lib_id, u32, 1);

static __always_inline int go_tail(struct pt_regs *ctx, u32 lib_id, int idx) {
    u32 zero = 0;
    u32 *slot = tail_lib_id.lookup(&zero);
    if (!slot)
        return 0;
    *slot = lib_id;
    go_tails.call(ctx, idx);
    return 0; /* only when the shared program is not loaded */
}

static __always_inline u16 tail_lib(void) {
    u32 zero = 0;
    u32 *slot = tail_lib_id.lookup(&zero);
    return slot ? (u16)*slot : 0;
}

int go_close(struct pt_regs *ctx) { return close_conn(GO_PARM1(ctx), FN_GO_CLOSE, tail_lib(), STACK_GO); }
int go_write_shared(struct pt_regs *ctx) { return go_write(ctx, tail_lib()); }
int go_client_hs(struct pt_regs *ctx) { return go_client_handshake(ctx, tail_lib()); }
int go_server_hs(struct pt_regs *ctx) {
    return open_conn(GO_PARM1(ctx), FN_GO_SERVER_HANDSHAKE, tail_lib(), STACK_GO);
}

int go_ret_sni(struct pt_regs *ctx) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct go_call_key_t key = {.g = GO_G(ctx), .pid = pid_tgid >> 32};
    struct go_handshake_t *p = go_handshakes.lookup(&key);
    if (!p)
        return 0;
    struct go_handshake_t hs = *p;
    go_handshakes.delete(&key);
    u64 name = GO_RET1(ctx), len = GO_RET2(ctx);
    if (!name || !len)
        return 0; /* no server name is sent (an IP address, or none configured) */
    int created;
    struct conn_t *c = conn_get(hs.conn, pid_tgid >> 32, &created);
    if (!c)
        return 0;
    u8 *r = records.ringbuf_reserve(sizeof(struct record_header) + SNI_MAX);
    if (!r) {
        count(CTR_DROPPED_RECORDS, 1);
        return 0;
    }
    struct record_header h = {};
    fill_header(&h, hs.conn, c->gen, KIND_SNI, 0, FN_GO_CLIENT_HANDSHAKE, (u16)hs.lib_id);
    h.stack = STACK_GO;
    u32 n = len > SNI_MAX - 1 ? SNI_MAX - 1 : len;
    n &= SNI_MAX - 1;
    if (bpf_probe_read_user(r + sizeof(struct record_header), n, (void *)name) != 0) {
        records.ringbuf_discard(r, BPF_RB_NO_WAKEUP);
        return 0;
    }
    h.len = n;
    __builtin_memcpy(r, &h, sizeof(h));
    records.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
    count(CTR_RECORDS, 1);
    return 0;
}

static __always_inline int go_return(struct pt_regs *ctx, u8 dir, u8 func) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct go_call_key_t key = {.g = GO_G(ctx), .pid = pid_tgid >> 32};
    struct go_call_t *p = go_calls.lookup(&key);
    if (!p)
        return 0;
    struct go_call_t call = *p;
    go_calls.delete(&key);
    s64 n = (s64)GO_RET1(ctx); /* (n int, err error): n counts the bytes moved, even with an error */
    if (n <= 0)
        return 0;
    return capture_call(call.conn, call.buf, (u64)n, dir, func, (u16)call.lib_id, STACK_GO);
}

/* Process starts and ends, for the recorder's library discovery and process identity. Header-only
 * records in their own small ring buffer, so that the recorder can react to an exec within
 * milliseconds without decoding plaintext. Few per second on a node: not filtered here. */
BPF_RINGBUF_OUTPUT(proc_events, 64);

static __always_inline void emit_proc_event(u8 kind) {
    struct record_header h = {};
    fill_header(&h, 0, 0, kind, 0, 0, 0);
    proc_events.ringbuf_output(&h, sizeof(h), 0);
}

#ifdef HOLD_NEW_FILES
/* Holding a process at a file nobody has judged yet: probing a file takes the recorder 10-40 ms
 * after the exec or mapping that shows it, and a program can make its first TLS call sooner. So a
 * wanted process that execs, or maps executable, a file not in judged_files is stopped (SIGSTOP,
 * delivered before it runs another instruction) and a HELD record sent; the recorder judges the
 * file, probes it if it is TLS, adds it to judged_files and resumes the process (SIGCONT). Each file
 * costs one hold, the first time; every later process runs untouched. Files are keyed by inode
 * number and size, which a container's overlay shows unchanged, so one image's files are judged
 * once however many containers run them. held_pids lets the recorder (and its watchdog, should the
 * recorder die) resume whoever is held.
 *
 * Kernel structures are read at the offsets the recorder found in the running kernel's BTF
 * (OFF_* defines, recorder/capture/kernel_btf.py), not at those of the headers bcc compiles with. */
struct file_key_t {
    u64 ino;
    u64 size;
};
BPF_TABLE("lru_hash", struct file_key_t, u8, judged_files, 65536);
BPF_HASH(held_pids, u32, u64, 4096);
BPF_ARRAY(hold_enabled, u32, 1);
#define OISP_SIGSTOP 19

static __always_inline void hold_at(u64 file, u8 where) {
    u32 zero = 0;
    u32 *on = hold_enabled.lookup(&zero);
    if (!on || !*on)
        return;
    u64 inode = read_ptr(file, OFF_FILE_F_INODE);
    if (!inode)
        return;
    struct file_key_t key = {};
    key.ino = read_ptr(inode, OFF_INODE_I_INO);
    key.size = read_ptr(inode, OFF_INODE_I_SIZE);
    if (judged_files.lookup(&key))
        return;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!wanted(pid))
        return;
    u64 task = (u64)bpf_get_current_task();
    if (read_u32(read_ptr(task, OFF_TASK_STRUCT_REAL_PARENT), OFF_TASK_STRUCT_TGID) == RECORDER_PID)
        return; /* the recorder's own helpers: it may be waiting for them */
    if (read_ptr(read_ptr(task, OFF_TASK_STRUCT_SIGNAL), OFF_SIGNAL_STRUCT_TTY))
        return; /* a terminal's: a person at a shell, whose job control would report the stop */
    u64 now = bpf_ktime_get_ns();
    if (held_pids.update(&pid, &now) != 0)
        return; /* no room to remember it: not held */
    if (bpf_send_signal(OISP_SIGSTOP) != 0) {
        held_pids.delete(&pid);
        return;
    }
    struct record_header h = {};
    fill_header(&h, 0, 0, KIND_HELD, 0, where, 0);
    h.offset = key.ino;
    h.call_len = key.size;
    proc_events.ringbuf_output(&h, sizeof(h), 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_mmap) {
    if (!(args->prot & 4) || (s64)args->fd < 0) /* PROT_EXEC of a file */
        return 0;
    hold_at(fd_file(args->fd), HOLD_MMAP);
    return 0;
}
#endif

TRACEPOINT_PROBE(sched, sched_process_exec) {
    emit_proc_event(KIND_EXEC);
#ifdef HOLD_NEW_FILES
    hold_at(read_ptr(read_ptr((u64)bpf_get_current_task(), OFF_TASK_STRUCT_MM), OFF_MM_STRUCT_EXE_FILE),
            HOLD_EXEC);
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((u32)pid_tgid == pid_tgid >> 32) /* the whole process, not one of its threads */
        emit_proc_event(KIND_EXIT);
    return 0;
}

/* A process opening a libssl: the recorder attaches to the file at once, from its path, without
 * waiting to see it in the process's mappings. Every openat on the node passes here, so the test is
 * cheap: read the path into per-CPU scratch, compare its tail, emit only on a match. */
#define PATH_MAX_READ 256
struct path_event_t {
    struct record_header h;
    char path[PATH_MAX_READ];
};
BPF_PERCPU_ARRAY(path_scratch, struct path_event_t, 1);

static __always_inline int tail_is(const char *buf, long n, const char *suffix, int len) {
    /* n counts the NUL; the suffix must end right before it */
    if (n - 1 < len)
        return 0;
#pragma unroll
    for (int k = 0; k < 13; k++) {
        if (k >= len)
            break;
        if (buf[(n - 1 - len + k) & (PATH_MAX_READ - 1)] != suffix[k])
            return 0;
    }
    return 1;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    /* a library is loaded read-only: a file opened for writing is being made (a copy, an image
     * layer being extracted), incomplete until closed; it is found once complete, when loaded */
    if (args->flags & 3) /* O_WRONLY | O_RDWR */
        return 0;
    u32 zero = 0;
    struct path_event_t *e = path_scratch.lookup(&zero);
    if (!e)
        return 0;
    long n = bpf_probe_read_user_str(e->path, PATH_MAX_READ, args->filename);
    if (n <= 0 || n > PATH_MAX_READ)
        return 0;
    if (!tail_is(e->path, n, "libssl.so.3", 11) && !tail_is(e->path, n, "libssl.so.1.1", 13))
        return 0;
    __builtin_memset(&e->h, 0, sizeof(e->h));
    fill_header(&e->h, 0, 0, KIND_LIBOPEN, 0, 0, 0);
    e->h.len = n - 1;
    proc_events.ringbuf_output(e, sizeof(*e), 0);
    return 0;
}

/* Return probes, shared by all library slots: lib_id comes from the arguments saved at entry. */
int ret_write(struct pt_regs *ctx) { return on_return(ctx, DIR_EGRESS, FN_SSL_WRITE); }
int ret_write_ex(struct pt_regs *ctx) { return on_return(ctx, DIR_EGRESS, FN_SSL_WRITE_EX); }
int ret_read(struct pt_regs *ctx) { return on_return(ctx, DIR_INGRESS, FN_SSL_READ); }
int ret_read_ex(struct pt_regs *ctx) { return on_return(ctx, DIR_INGRESS, FN_SSL_READ_EX); }
int go_ret_read(struct pt_regs *ctx) { return go_return(ctx, DIR_INGRESS, FN_GO_READ); }

/* Entry probes. With BPF links (USE_ATTACH_COOKIE, Linux 5.15+) there is one set, and each probe's
 * cookie is the lib_id of the file it was attached to: the recorder appends DEFINE_PROBES(c) once.
 * Without, one set per library slot (DEFINE_PROBES(0), DEFINE_PROBES(1), ...), each passing its own
 * lib_id; compiling them is then most of the recorder's start-up time (about 0.1 s per slot). Kept few
 * and small either way: SSL_write and SSL_read share one (the direction is the return probe's), as do
 * SSL_set_fd/rfd/wfd; Go's entry-only probes tail-call shared programs. */
#ifdef USE_ATTACH_COOKIE
#define LIB_ID(ID) ((u16)bpf_get_attach_cookie(ctx))
#else
#define LIB_ID(ID) ID
#endif
#define DEFINE_PROBES(ID)                                                                           \
    int entry_rw_##ID(struct pt_regs *ctx) { return on_entry(ctx, 0, LIB_ID(ID)); }                  \
    int entry_rw_ex_##ID(struct pt_regs *ctx) { return on_entry(ctx, 1, LIB_ID(ID)); }               \
    int entry_do_handshake_##ID(struct pt_regs *ctx) {                                               \
        return on_open(ctx, FN_SSL_DO_HANDSHAKE, LIB_ID(ID));                                         \
    }                                                                                                \
    int entry_connect_##ID(struct pt_regs *ctx) { return on_open(ctx, FN_SSL_CONNECT, LIB_ID(ID)); } \
    int entry_accept_##ID(struct pt_regs *ctx) { return on_open(ctx, FN_SSL_ACCEPT, LIB_ID(ID)); }   \
    int entry_free_##ID(struct pt_regs *ctx) { return on_free(ctx, LIB_ID(ID)); }                    \
    int entry_ctrl_##ID(struct pt_regs *ctx) { return on_ctrl(ctx, LIB_ID(ID)); }                    \
    int entry_set_fd_##ID(struct pt_regs *ctx) { return on_set_fd(ctx, FN_SSL_SET_FD, LIB_ID(ID)); } \
    int go_read_##ID(struct pt_regs *ctx) { return go_entry(ctx, LIB_ID(ID)); }                     \
    GO_ENTRY_ONLY_PROBES(ID)
#ifdef USE_ATTACH_COOKIE
/* one set: the work in place (a program loaded for uprobe-multi links cannot tail-call) */
#define GO_ENTRY_ONLY_PROBES(ID)                                                                     \
    int go_close_##ID(struct pt_regs *ctx) {                                                         \
        return close_conn(GO_PARM1(ctx), FN_GO_CLOSE, LIB_ID(ID), STACK_GO);                          \
    }                                                                                                \
    int go_client_hs_##ID(struct pt_regs *ctx) { return go_client_handshake(ctx, LIB_ID(ID)); }      \
    int go_server_hs_##ID(struct pt_regs *ctx) {                                                     \
        return open_conn(GO_PARM1(ctx), FN_GO_SERVER_HANDSHAKE, LIB_ID(ID), STACK_GO);                \
    }                                                                                                \
    int go_write_##ID(struct pt_regs *ctx) { return go_write(ctx, LIB_ID(ID)); }
#else
#define GO_ENTRY_ONLY_PROBES(ID)                                                                     \
    int go_close_##ID(struct pt_regs *ctx) { return go_tail(ctx, LIB_ID(ID), TAIL_GO_CLOSE); }        \
    int go_client_hs_##ID(struct pt_regs *ctx) { return go_tail(ctx, LIB_ID(ID), TAIL_GO_CLIENT_HS); } \
    int go_server_hs_##ID(struct pt_regs *ctx) { return go_tail(ctx, LIB_ID(ID), TAIL_GO_SERVER_HS); } \
    int go_write_##ID(struct pt_regs *ctx) { return go_tail(ctx, LIB_ID(ID), TAIL_GO_WRITE); }
#endif

/* TLS plaintext capture: uprobes on OpenSSL's SSL_write/SSL_read (and the _ex variants), plus
 * SSL_free and the handshake entry points for the connection lifecycle.
 *
 * Compiled by bcc at run time. The recorder prepends #defines for CHUNK_SIZE, MAX_CHUNKS,
 * RINGBUF_PAGES, CONN_MAP_SIZE and RECORDER_PID, and appends one DEFINE_PROBES(n) line per library
 * file it attaches to, so every record says which library file produced it (lib_id).
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

static __always_inline int on_entry(struct pt_regs *ctx, int has_len_ptr) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    struct call_args_t args = {};
    args.ssl = PT_REGS_PARM1(ctx);
    args.buf = PT_REGS_PARM2(ctx);
    /* SSL_write_ex(ssl, buf, num, *written) / SSL_read_ex(ssl, buf, num, *readbytes) */
    args.len_ptr = has_len_ptr ? PT_REGS_PARM4(ctx) : 0;
    if (args.ssl)
        save_args(&args);
    return 0;
}

static __always_inline int on_return(struct pt_regs *ctx, u8 dir, u8 func, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
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

    int created;
    struct conn_t *c = conn_get(a.ssl, pid_tgid >> 32, &created);
    if (!c)
        return 0;
    u64 base = __sync_fetch_and_add(&c->off[dir & 1], total);
    u64 gen = c->gen;

    u32 zero = 0;
    struct record_header h = {};
    fill_header(&h, a.ssl, gen, KIND_DATA, dir, func, lib_id);
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
        u8 failed = emit_chunk(&h, n, (void *)(a.buf + done));
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

/* A handshake entry point: the connection is seen from its first byte. */
static __always_inline int on_open(struct pt_regs *ctx, u8 func, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!wanted(pid_tgid >> 32))
        return 0;
    u64 ssl = PT_REGS_PARM1(ctx);
    int created;
    struct conn_t *c = conn_get(ssl, pid_tgid >> 32, &created);
    /* SSL_do_handshake is called repeatedly on non-blocking sockets: announce once */
    if (!c || !created)
        return 0;
    struct record_header h = {};
    fill_header(&h, ssl, c->gen, KIND_OPEN, 0, func, lib_id);
    emit_meta(&h);
    return 0;
}

static __always_inline int on_free(struct pt_regs *ctx, u16 lib_id) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u64 ssl = PT_REGS_PARM1(ctx);
    struct conn_key_t key = {.ssl = ssl, .pid = pid_tgid >> 32};
    struct conn_t *c = conns.lookup(&key);
    if (!c)
        return 0;
    struct record_header h = {};
    fill_header(&h, ssl, c->gen, KIND_CLOSE, 0, FN_SSL_FREE, lib_id);
    h.offset = c->off[DIR_EGRESS];
    h.call_len = c->off[DIR_INGRESS];
    conns.delete(&key);
    emit_meta(&h);
    return 0;
}

/* One set of probe functions per library file, so each record carries its lib_id. */
#define DEFINE_PROBES(ID)                                                                           \
    int entry_write_##ID(struct pt_regs *ctx) { return on_entry(ctx, 0); }                           \
    int entry_write_ex_##ID(struct pt_regs *ctx) { return on_entry(ctx, 1); }                       \
    int entry_read_##ID(struct pt_regs *ctx) { return on_entry(ctx, 0); }                            \
    int entry_read_ex_##ID(struct pt_regs *ctx) { return on_entry(ctx, 1); }                         \
    int ret_write_##ID(struct pt_regs *ctx) { return on_return(ctx, DIR_EGRESS, FN_SSL_WRITE, ID); } \
    int ret_write_ex_##ID(struct pt_regs *ctx) {                                                     \
        return on_return(ctx, DIR_EGRESS, FN_SSL_WRITE_EX, ID);                                      \
    }                                                                                               \
    int ret_read_##ID(struct pt_regs *ctx) { return on_return(ctx, DIR_INGRESS, FN_SSL_READ, ID); }  \
    int ret_read_ex_##ID(struct pt_regs *ctx) {                                                      \
        return on_return(ctx, DIR_INGRESS, FN_SSL_READ_EX, ID);                                      \
    }                                                                                               \
    int entry_do_handshake_##ID(struct pt_regs *ctx) { return on_open(ctx, FN_SSL_DO_HANDSHAKE, ID); } \
    int entry_connect_##ID(struct pt_regs *ctx) { return on_open(ctx, FN_SSL_CONNECT, ID); }         \
    int entry_accept_##ID(struct pt_regs *ctx) { return on_open(ctx, FN_SSL_ACCEPT, ID); }           \
    int entry_free_##ID(struct pt_regs *ctx) { return on_free(ctx, ID); }

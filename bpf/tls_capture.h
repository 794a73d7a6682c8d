/* Shared layout of the records the TLS capture program writes to its ring buffer.
 *
 * The recorder decodes these with the same field order (recorder/capture/records.py); change both together
 * and bump RECORD_LAYOUT_VERSION. Every record starts with the same fixed header; DATA records are
 * followed by `len` bytes of plaintext.
 */
#ifndef OISP_TLS_CAPTURE_H
#define OISP_TLS_CAPTURE_H

#define RECORD_LAYOUT_VERSION 4

/* record kinds */
#define KIND_DATA 1  /* plaintext bytes follow the header */
#define KIND_GAP 2   /* `len` bytes at `offset` were moved by the call but not captured */
#define KIND_OPEN 3  /* a handshake started on this SSL: the stream is observed from byte 0 */
#define KIND_CLOSE 4 /* SSL_free: the connection ended; offsets hold the final stream lengths */
#define KIND_SNI 5    /* SSL_ctrl(SET_TLSEXT_HOSTNAME): `len` bytes of server name follow */
#define KIND_SOCKET 6 /* the connection's socket: a struct socket_info follows */
/* process events, written to the separate proc_events ring buffer (header only) */
#define KIND_EXEC 7   /* the process (pid) completed an exec */
#define KIND_EXIT 8   /* the process (pid) exited */
#define KIND_LIBOPEN 9 /* the process opens a file named libssl.so.*: `len` bytes of its path follow */
#define KIND_HELD 10   /* the process was stopped (SIGSTOP) at a file the recorder has not judged yet:
                        * `offset` and `call_len` hold the file's inode number and size, `func` HOLD_* */

/* where a process was held (the `func` byte of HELD records) */
#define HOLD_EXEC 1 /* its exec of the program */
#define HOLD_MMAP 2 /* its executable mapping of a file (the loader mapping a library) */

/* gap reasons (in the `func` byte of GAP records) */
#define GAP_RINGBUF_FULL 1  /* the ring buffer had no room for the chunk */
#define GAP_OVER_LIMIT 2    /* the call moved more than MAX_CHUNKS * CHUNK_SIZE bytes */
#define GAP_READ_FAULT 3    /* bpf_probe_read_user failed (page not resident) */

/* directions */
#define DIR_EGRESS 0  /* SSL_write*: the application sent these bytes */
#define DIR_INGRESS 1 /* SSL_read*: the application received these bytes */

/* TLS functions probed (the `func` byte of DATA records) */
#define FN_SSL_WRITE 1
#define FN_SSL_WRITE_EX 2
#define FN_SSL_READ 3
#define FN_SSL_READ_EX 4
#define FN_SSL_FREE 5
#define FN_SSL_DO_HANDSHAKE 6
#define FN_SSL_CONNECT 7
#define FN_SSL_ACCEPT 8
#define FN_SSL_CTRL 9
#define FN_SSL_SET_FD 10
#define FN_SSL_SET_RFD 11
#define FN_SSL_SET_WFD 12
/* Go crypto/tls, compiled into each Go program */
#define FN_GO_WRITE 13            /* crypto/tls.(*Conn).Write */
#define FN_GO_READ 14             /* crypto/tls.(*Conn).Read */
#define FN_GO_CLOSE 15            /* crypto/tls.(*Conn).Close */
#define FN_GO_CLIENT_HANDSHAKE 16 /* crypto/tls.(*Conn).clientHandshake */
#define FN_GO_SERVER_HANDSHAKE 17 /* crypto/tls.(*Conn).serverHandshake */
/* plaintext sockets (PLAIN_CAPTURE): the system call that moved the bytes or marked the connection */
#define FN_SYS_WRITE 18
#define FN_SYS_READ 19
#define FN_SYS_SENDTO 20
#define FN_SYS_RECVFROM 21
#define FN_SYS_WRITEV 22
#define FN_SYS_READV 23
#define FN_SYS_SENDMSG 24
#define FN_SYS_RECVMSG 25
#define FN_SYS_CONNECT 26 /* open: the process connected (client end) */
#define FN_SYS_ACCEPT 27  /* open: the process accepted (server end) */
#define FN_SYS_CLOSE 28

/* which TLS implementation a record comes from (the `stack` byte) */
#define STACK_OPENSSL 1 /* the OpenSSL API: a libssl, or a program exporting SSL_read/SSL_write */
#define STACK_GO 2      /* Go's crypto/tls */
#define STACK_PLAIN 3   /* no TLS: plaintext HTTP read and written by system calls on a TCP socket */

/* where a SOCKET record's fd and peer address come from */
#define SOCK_SRC_SET_FD 1         /* SSL_set_fd/rfd/wfd named the fd; peer from its connect() */
#define SOCK_SRC_THREAD_CONNECT 2 /* no fd given to the library (memory BIOs: Node, asyncio): the
                                   * last connect() of the thread that started the handshake */
#define SOCK_SRC_GO_CONN 3        /* the fd of the net.Conn a Go *tls.Conn wraps; peer from its connect() */
#define SOCK_SRC_SYSCALL 4        /* the fd of the system calls; both ends from the kernel's socket */

struct socket_info {
    s32 fd;       /* -1: unknown */
    u16 family;   /* AF_INET, AF_INET6; 0: no address known */
    u16 port;     /* peer port, host byte order */
    u8 addr[16];  /* peer address; IPv4 in the first 4 bytes */
    u8 source;    /* SOCK_SRC_* */
    u8 pad[5];
    u16 local_port;     /* 0: the local end is not known here (the recorder looks it up) */
    u8 local_addr[16];  /* same family as the peer's */
};

struct record_header {
    u64 ts_mono_ns;   /* bpf_ktime_get_ns() at the return of the call */
    u64 ssl;          /* SSL* in the process */
    u64 conn_gen;     /* generation: new for every (pid, SSL*) the program first sees */
    u64 offset;       /* byte offset of this record in its connection-direction stream;
                       * CLOSE: total egress bytes of the connection */
    u64 call_len;     /* bytes the whole call moved (DATA/GAP); CLOSE: total ingress bytes */
    u64 cgroup_id;    /* cgroup v2 id of the calling task */
    u32 pid;          /* tgid, host pid namespace */
    u32 tid;
    u32 uid;
    u32 len;          /* bytes in this record (DATA) or bytes missing (GAP) */
    u16 lib_id;       /* index of the probed library file, assigned by the recorder */
    u8 kind;
    u8 dir;
    u8 func;          /* FN_* for DATA/OPEN/CLOSE, GAP_* reason for GAP */
    u8 stack;         /* STACK_*: the TLS implementation */
    u8 pad[2];
    char comm[16];
};

#endif

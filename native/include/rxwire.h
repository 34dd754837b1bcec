/* rxwire.h — every constant the C code shares with proto/ (proto/WIRE.md), in one place.
 *
 * proto/ is the definition; this header is the C copy, and the only one: no C file keeps a private
 * copy of a wire number. tests/test_wire.py checks every macro here against proto/, by value and,
 * for statuses, by name in both directions. Naming: a proto name that starts with RX_ is used as
 * it is (RX_ERR_NO_MEMORY, RX_VMO_OP_CACHE_SYNC, RX_FUTEX_WAITERS); any other gets an RX_ prefix
 * (proto CONTROL_INVALIDATE is RX_CONTROL_INVALIDATE here, PROTOCOL_MAGIC is RX_PROTOCOL_MAGIC).
 * Names proto has no name for (frame layouts, control frame limits) say which proto code or
 * WIRE.md text they follow.
 *
 * cffi: native/_build.py gives cffi a `#define NAME ...` line for each object-like RX_* macro of
 * this file (the argon2-cffi-bindings way: cffi reads the value from this compiled header), so
 * each is rxkernel.native.lib.NAME in Python and no name is written down twice. Keep this file
 * plain object-like #defines of integer constant expressions, plus the RX_STATUS_LIST X-macro.
 * Include guard and helpers must not start with RX_.
 */
#ifndef RXWIRE_H
#define RXWIRE_H

/* ---- hello and channels (proto/_constants.py) ---------------------------------------------- */

#define RX_PROTOCOL_MAGIC 0x5258 /* "RX" */
#define RX_PROTOCOL_VERSION 1

#define RX_CHANNEL_MAIN 0
#define RX_CHANNEL_FAULT 1
#define RX_CHANNEL_CONTROL 2
#define RX_CHANNEL_THREAD 3

/* Hello [magic, version, kind, token]; the reply on a fault or control channel is
 * [magic, version, status]. */
#define RX_HELLO_WORDS 4
#define RX_HELLO_REPLY_HEAD 3

#define RX_SESSION_TOKEN_BYTES 16

/* rx pages; unsigned long long so that masks built from it stay 64 bits wide. */
#define RX_PAGE_SIZE 4096ull
#define RX_PAGE_SHIFT 12

/* Mapping permissions, also the `prot` of fault and PROTECT ops (Linux's PROT_READ/PROT_WRITE). */
#define RX_VM_PERM_READ 1
#define RX_VM_PERM_WRITE 2
#define RX_VM_PERMS 3

/* The rx_vmar_map option that turns fault-around off (rxd's fault fast path reads it). */
#define RX_VM_MAP_RANDOM (1 << 20)

/* ---- fault channel (proto/_events.py, proto/_connection.py) --------------------------------- */

/* Request [seq, addr, flags]: flags bit 0 is a write access. */
#define RX_FAULT_REQUEST_WORDS 3
#define RX_FAULT_FLAG_WRITE 1

/* Reply [seq, status, inval_seq, op...], in FaultReply's field order: this many integers before
 * the first op, ... */
#define RX_FAULT_REPLY_HEAD 3
#define RX_FAULT_REPLY_FIELD_SEQ 0
#define RX_FAULT_REPLY_FIELD_STATUS 1
#define RX_FAULT_REPLY_FIELD_INVAL_SEQ 2
/* ... each op this many, in FaultOp's field order: */
#define RX_FAULT_OP_WORDS 6
#define RX_FAULT_OP_FIELD_ADDR 0
#define RX_FAULT_OP_FIELD_LENGTH 1
#define RX_FAULT_OP_FIELD_KIND 2
#define RX_FAULT_OP_FIELD_PROT 3
#define RX_FAULT_OP_FIELD_STORE_ID 4
#define RX_FAULT_OP_FIELD_FILE_OFFSET 5

/* Op kinds. */
#define RX_FAULT_OP_ZERO 0
#define RX_FAULT_OP_STORE 1

/* At most this many ops in one reply (proto FAULT_MAX_OPS; rxd's fault-around stops there). */
#define RX_FAULT_MAX_OPS 64

/* ---- control channel (proto/_events.py) ---------------------------------------------------- */

/* Request [seq, op, inval_seq, args...], in ControlRequest's field order: this many integers
 * before the args. Ack [seq, status]. */
#define RX_CONTROL_REQUEST_HEAD 3
#define RX_CONTROL_REQUEST_FIELD_SEQ 0
#define RX_CONTROL_REQUEST_FIELD_OP 1
#define RX_CONTROL_REQUEST_FIELD_INVAL_SEQ 2
#define RX_CONTROL_ACK_WORDS 2

#define RX_CONTROL_INVALIDATE 1
#define RX_CONTROL_PROTECT 2
#define RX_CONTROL_PING 3
#define RX_CONTROL_STORE 4
#define RX_CONTROL_FORGET 5

/* Integers per range of each op (proto CONTROL_RANGE_WIDTHS). */
#define RX_CONTROL_INVALIDATE_WIDTH 2 /* addr, length */
#define RX_CONTROL_PROTECT_WIDTH 3    /* addr, length, prot */
#define RX_CONTROL_PING_WIDTH 0
#define RX_CONTROL_STORE_WIDTH 2  /* store_id, writable; exactly one pair, the fd rides along */
#define RX_CONTROL_FORGET_WIDTH 1 /* store_id */

/* The largest control frame the client accepts, and the most ranges one may carry (WIRE.md
 * "Control frames are at most 64 KiB (4096 ranges)"; rxd sends far fewer per request). */
#define RX_CONTROL_MAX_FRAME_BYTES 65536
#define RX_CONTROL_MAX_RANGES 4096

/* ---- statuses (proto/_status.py: all of them) ---------------------------------------------- */

#define RX_OK 0
#define RX_ERR_INTERNAL (-1)
#define RX_ERR_NOT_SUPPORTED (-2)
#define RX_ERR_NO_RESOURCES (-3)
#define RX_ERR_NO_MEMORY (-4)
#define RX_ERR_INVALID_ARGS (-10)
#define RX_ERR_BAD_HANDLE (-11)
#define RX_ERR_WRONG_TYPE (-12)
#define RX_ERR_BAD_SYSCALL (-13)
#define RX_ERR_OUT_OF_RANGE (-14)
#define RX_ERR_BUFFER_TOO_SMALL (-15)
#define RX_ERR_BAD_STATE (-20)
#define RX_ERR_TIMED_OUT (-21)
#define RX_ERR_SHOULD_WAIT (-22)
#define RX_ERR_CANCELED (-23)
#define RX_ERR_PEER_CLOSED (-24)
#define RX_ERR_NOT_FOUND (-25)
#define RX_ERR_ALREADY_EXISTS (-26)
#define RX_ERR_ALREADY_BOUND (-27)
#define RX_ERR_UNAVAILABLE (-28)
#define RX_ERR_ACCESS_DENIED (-30)

/* Every status above, once: X(name) for each. The diagnostics build their name table from it
 * (client/diag.c); a status defined above but missing here compiles, and tests/test_wire.py
 * fails on it (it compares this list with proto's STATUS_NAMES both ways). */
#define RX_STATUS_LIST(X)                                                                          \
    X(RX_OK)                                                                                       \
    X(RX_ERR_INTERNAL)                                                                             \
    X(RX_ERR_NOT_SUPPORTED)                                                                        \
    X(RX_ERR_NO_RESOURCES)                                                                         \
    X(RX_ERR_NO_MEMORY)                                                                            \
    X(RX_ERR_INVALID_ARGS)                                                                         \
    X(RX_ERR_BAD_HANDLE)                                                                           \
    X(RX_ERR_WRONG_TYPE)                                                                           \
    X(RX_ERR_BAD_SYSCALL)                                                                          \
    X(RX_ERR_OUT_OF_RANGE)                                                                         \
    X(RX_ERR_BUFFER_TOO_SMALL)                                                                     \
    X(RX_ERR_BAD_STATE)                                                                            \
    X(RX_ERR_TIMED_OUT)                                                                            \
    X(RX_ERR_SHOULD_WAIT)                                                                          \
    X(RX_ERR_CANCELED)                                                                             \
    X(RX_ERR_PEER_CLOSED)                                                                          \
    X(RX_ERR_NOT_FOUND)                                                                            \
    X(RX_ERR_ALREADY_EXISTS)                                                                       \
    X(RX_ERR_ALREADY_BOUND)                                                                        \
    X(RX_ERR_UNAVAILABLE)                                                                          \
    X(RX_ERR_ACCESS_DENIED)

/* ---- rx_vmo_op_range cache ops (proto/_constants.py; Zircon's numbers; server/rxcache.c) ---- */

#define RX_VMO_OP_CACHE_SYNC 6
#define RX_VMO_OP_CACHE_INVALIDATE 7
#define RX_VMO_OP_CACHE_CLEAN 8
#define RX_VMO_OP_CACHE_CLEAN_INVALIDATE 9

/* ---- robust futex word (proto/_constants.py; rxsync.h's mutex, server/object/_futex.py) ----- */

#define RX_FUTEX_OWNER_MASK 0x3fffffffu /* bits 0..29: the owner's pid, 0 = unlocked */
#define RX_FUTEX_OWNER_DIED 0x40000000u /* the last owner died holding it */
#define RX_FUTEX_WAITERS 0x80000000u    /* someone may sleep on the word: unlock must wake */

#endif /* RXWIRE_H */

/* SPDX-License-Identifier: MIT */
/* libmailbox C API: the same operations as mailbox.hpp, for C and FFI.
 * Every function returns 0 or a negative errno, or (receive) a length. */
#ifndef MAILBOX_MAILBOX_H
#define MAILBOX_MAILBOX_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mbx_mailbox mbx_t;

#define MBX_SEND 1u
#define MBX_RECEIVE 2u
/* If the segment may not be mapped (EACCES), use the mailbox file instead. */
#define MBX_FALLBACK 4u
#define MBX_UNBOUNDED UINT64_MAX

/* Opens the mailbox file at path for MBX_SEND and/or MBX_RECEIVE (-EINVAL
 * for neither, or for an unknown flag). */
int mbx_open(const char *path, unsigned flags, mbx_t **out);
/* Creates a mailbox (EEXIST if present) with these settings, then opens it. */
int mbx_create(const char *path, uint64_t capacity, uint64_t max_message, unsigned mode, unsigned flags, mbx_t **out);
/* Closes m. A view still open is released (its message counts as received,
 * as mbx_release()); a reservation still open is dropped (nothing is sent,
 * as mbx_abort()). */
void mbx_close(mbx_t *m);

/* timeout_ms: -1 waits forever, 0 never waits (-EAGAIN), > 0 bounds the wait
 * (-ETIMEDOUT); below -1 is -EINVAL. */
int mbx_send(mbx_t *m, const void *data, size_t len, int timeout_ms);
/* Returns the message length. A message larger than cap gives -EMSGSIZE and
 * stays queued for any receiver; through the file (MBX_FALLBACK in use) it has
 * already left the mailbox and is kept in m for its next receive with a
 * larger buffer (lost if m is closed first). */
ssize_t mbx_recv(mbx_t *m, void *buf, size_t cap, int timeout_ms);

/* Priorities: 0 (the default, lowest) to MBX_PRIO_MAX (-EINVAL above). A
 * receive takes the oldest message of the highest priority, as mq_receive.
 * mbx_send_prio sends at prio (-ENOTSUP for prio > 0 into a segment that
 * predates priorities or on a Redis mount); mbx_recv_prio is mbx_recv that
 * also stores the message's priority in *prio (unless prio is NULL). */
#define MBX_PRIO_MAX 32767u
int mbx_send_prio(mbx_t *m, const void *data, size_t len, unsigned prio, int timeout_ms);
ssize_t mbx_recv_prio(mbx_t *m, void *buf, size_t cap, unsigned *prio, int timeout_ms);

/* The sender of the last message received through m (any out pointer may be NULL). */
void mbx_last_sender(const mbx_t *m, pid_t *pid, uid_t *uid, gid_t *gid);
/* The priority of the last message received through m (a view's included). */
unsigned mbx_last_priority(const mbx_t *m);

/* Zero-copy send: reserves room for exactly len bytes and returns where they
 * go in *data; then mbx_commit() sends them or mbx_abort() drops them. Other
 * senders wait in between; one reservation per mbx_t at a time (-EBUSY). */
int mbx_reserve(mbx_t *m, size_t len, void **data, int timeout_ms);
int mbx_commit(mbx_t *m);
void mbx_abort(mbx_t *m);

/* Zero-copy receive: the oldest message, in place, until mbx_release()
 * removes it or mbx_put_back() leaves it queued. Other receivers wait in
 * between; one view per mbx_t at a time (-EBUSY). Returns the length. */
ssize_t mbx_recv_view(mbx_t *m, const void **data, int timeout_ms);
void mbx_release(mbx_t *m);
void mbx_put_back(mbx_t *m);

#ifdef __cplusplus
}
#endif
#endif

/* SPDX-License-Identifier: MIT */
/* POSIX message queues over mailboxfs mailboxes (mailbox_mq(3)).
 *
 * The same signatures and errno values as <mqueue.h>, prefixed mbx_: a queue
 * "/name" is the mailbox file <root>/name, root being $MAILBOXFS_MQ_ROOT or
 * MBX_MQ_DEFAULT_ROOT. A descriptor is a real file descriptor on that file
 * (poll, select and epoll work on it); messages go through libmailbox's
 * shared-memory path. Close it with mbx_mq_close (close(2) leaks its state,
 * except under the preload library, libmailbox-mq.so).
 * Define MBX_MQ_RENAME before including this header to call these through
 * the standard names (mq_open and so on) in your own code. */
#ifndef MAILBOX_MQUEUE_H
#define MAILBOX_MQUEUE_H

#include <mqueue.h>
#include <signal.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MBX_MQ_DEFAULT_ROOT "/mnt/mbx"

mqd_t mbx_mq_open(const char *name, int oflag, ...);
int mbx_mq_close(mqd_t mqdes);
int mbx_mq_unlink(const char *name);
int mbx_mq_send(mqd_t mqdes, const char *msg_ptr, size_t msg_len, unsigned msg_prio);
int mbx_mq_timedsend(mqd_t mqdes, const char *msg_ptr, size_t msg_len, unsigned msg_prio,
                     const struct timespec *abs_timeout);
ssize_t mbx_mq_receive(mqd_t mqdes, char *msg_ptr, size_t msg_len, unsigned *msg_prio);
ssize_t mbx_mq_timedreceive(mqd_t mqdes, char *msg_ptr, size_t msg_len, unsigned *msg_prio,
                            const struct timespec *abs_timeout);
int mbx_mq_getattr(mqd_t mqdes, struct mq_attr *attr);
int mbx_mq_setattr(mqd_t mqdes, const struct mq_attr *newattr, struct mq_attr *oldattr);
int mbx_mq_notify(mqd_t mqdes, const struct sigevent *sevp);

/* The root queue names map under ($MAILBOXFS_MQ_ROOT, else MBX_MQ_DEFAULT_ROOT). */
const char *mbx_mq_root(void);
/* 1 if the root is (inside) a mounted mailboxfs, else 0. */
int mbx_mq_root_mounted(void);
/* 1 if mqdes was opened by mbx_mq_open and is not closed, else 0. */
int mbx_mq_owns(mqd_t mqdes);

#ifdef __cplusplus
}
#endif

#ifdef MBX_MQ_RENAME
#define mq_open mbx_mq_open
#define mq_close mbx_mq_close
#define mq_unlink mbx_mq_unlink
#define mq_send mbx_mq_send
#define mq_timedsend mbx_mq_timedsend
#define mq_receive mbx_mq_receive
#define mq_timedreceive mbx_mq_timedreceive
#define mq_getattr mbx_mq_getattr
#define mq_setattr mbx_mq_setattr
#define mq_notify mbx_mq_notify
#endif

#endif /* MAILBOX_MQUEUE_H */

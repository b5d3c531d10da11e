/* The connection's output queue: response heads and copied bodies in one reusable buffer, borrowed
 * bodies by reference, all written with one sendmsg (a writev that never raises SIGPIPE). */
#include "http_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define OUTQ_MAX_IOV 64
/* A buffer grown past this for one big response goes back to its first size once written. */
#define OUTQ_KEEP_BYTES (64 * 1024)
#define OUTQ_MIN_SEGS   8

int outq_init(outq_t *q, size_t cap)
{
    memset(q, 0, sizeof(*q));
    q->buf = fl_malloc(cap);
    q->segs = fl_malloc(OUTQ_MIN_SEGS * sizeof(outseg_t));
    if (q->buf == NULL || q->segs == NULL) {
        fl_free(q->buf);
        fl_free(q->segs);
        q->buf = NULL;
        q->segs = NULL;
        return FL_ENOMEM;
    }
    q->cap = cap;
    q->segcap = OUTQ_MIN_SEGS;
    return FL_OK;
}

static bool reserve_seg(outq_t *q)
{
    if (q->n < q->segcap)
        return true;
    if (q->head > 0) { /* slide the unsent segments down before growing */
        memmove(q->segs, q->segs + q->head, (q->n - q->head) * sizeof(outseg_t));
        q->n -= q->head;
        q->head = 0;
        return true;
    }
    unsigned cap = q->segcap * 2;
    outseg_t *segs = fl_realloc(q->segs, cap * sizeof(outseg_t));
    if (segs == NULL)
        return false;
    q->segs = segs;
    q->segcap = cap;
    return true;
}

char *outq_reserve(outq_t *q, size_t n)
{
    if (!reserve_seg(q))
        return NULL;
    if (n > q->cap - q->len) {
        size_t cap = q->cap ? q->cap : 1024;
        while (cap - q->len < n) {
            if (cap > SIZE_MAX / 2)
                return NULL;
            cap *= 2;
        }
        char *buf = fl_realloc(q->buf, cap);
        if (buf == NULL)
            return NULL;
        q->buf = buf;
        q->cap = cap;
    }
    return q->buf + q->len;
}

void outq_commit(outq_t *q, size_t n)
{
    if (n == 0)
        return;
    outseg_t *last = q->n > q->head ? &q->segs[q->n - 1] : NULL;
    if (last && last->ref == NULL && last->off + last->len == q->len) {
        last->len += n;
    } else {
        q->segs[q->n++] = (outseg_t){.ref = NULL, .off = q->len, .len = n};
    }
    q->len += n;
    q->pending += n;
}

int outq_add(outq_t *q, const void *p, size_t n)
{
    char *room = outq_reserve(q, n);
    if (room == NULL)
        return FL_ENOMEM;
    if (n > 0)
        memcpy(room, p, n);
    outq_commit(q, n);
    return FL_OK;
}

int outq_add_ref(outq_t *q, const void *p, size_t n, void (*release)(void *ctx), void *ctx)
{
    if (!reserve_seg(q))
        return FL_ENOMEM;
    q->segs[q->n++] = (outseg_t){.ref = p, .len = n, .release = release, .ctx = ctx};
    q->pending += n;
    return FL_OK;
}

/* Everything written: start the buffer over, and give back memory one big response took. */
static void outq_rewind(outq_t *q)
{
    q->head = q->n = 0;
    q->sent = 0;
    q->len = 0;
    if (q->cap > OUTQ_KEEP_BYTES) {
        char *small = fl_malloc(OUTQ_KEEP_BYTES);
        if (small) {
            fl_free(q->buf);
            q->buf = small;
            q->cap = OUTQ_KEEP_BYTES;
        }
    }
}

ssize_t outq_write(outq_t *q, int fd)
{
    struct iovec iov[OUTQ_MAX_IOV];
    int niov = 0;
    for (unsigned i = q->head; i < q->n && niov < OUTQ_MAX_IOV; i++) {
        const outseg_t *s = &q->segs[i];
        size_t skip = i == q->head ? q->sent : 0;
        const char *base = s->ref ? s->ref : q->buf + s->off;
        if (s->len - skip == 0)
            continue;
        iov[niov].iov_base = (void *)(uintptr_t)(base + skip);
        iov[niov].iov_len = s->len - skip;
        niov++;
    }
    ssize_t w = 0;
    if (niov > 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
        w = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0)
            return -1;
    }
    size_t left = (size_t)w;
    q->pending -= left;
    while (q->head < q->n) {
        outseg_t *s = &q->segs[q->head];
        size_t rest = s->len - q->sent;
        if (left < rest) {
            q->sent += left;
            break;
        }
        left -= rest;
        q->sent = 0;
        q->head++;
        if (s->release)
            s->release(s->ctx);
    }
    if (q->head == q->n)
        outq_rewind(q);
    return w;
}

void outq_free(outq_t *q)
{
    for (unsigned i = q->head; i < q->n; i++)
        if (q->segs[i].release)
            q->segs[i].release(q->segs[i].ctx);
    fl_free(q->buf);
    fl_free(q->segs);
    memset(q, 0, sizeof(*q));
}

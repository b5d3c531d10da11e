/* Requests waiting for a connection: each request (one query or a whole transaction) is one
 * allocation, the queue a plain FIFO. */
#include "db_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static bool is_binary(const fl_db_stmt_t *s, int i)
{
    return s->formats != NULL && s->formats[i] == 1;
}

/* Bytes of parameter i's copy: a binary value as long as it says, text with its NUL. */
static size_t value_size(const fl_db_stmt_t *s, int i)
{
    return is_binary(s, i) ? (size_t)s->lengths[i] : strlen(s->values[i]) + 1;
}

int db_stmt_check(const fl_db_stmt_t *s)
{
    if (s->sql == NULL || s->nparams < 0 || s->nparams > 65535 || (s->nparams > 0 && s->values == NULL))
        return FL_EINVAL;
    for (int i = 0; s->formats != NULL && i < s->nparams; i++) {
        if (s->formats[i] != 0 && s->formats[i] != 1)
            return FL_EINVAL;
        if (s->formats[i] == 1 && s->values[i] != NULL && (s->lengths == NULL || s->lengths[i] < 0))
            return FL_EINVAL;
    }
    return FL_OK;
}

static bool grow(size_t *size, size_t more)
{
    return !__builtin_add_overflow(*size, more, size);
}

/* Layout of the one allocation, in decreasing alignment: the request, its statements, the results
 * (a transaction), every statement's value pointers, then its lengths and formats, then bytes. */
db_request_t *db_request_new(db_request_kind_t kind, const fl_db_stmt_t *stmts, int n)
{
    size_t nresults = kind == DB_REQ_TX ? (size_t)n : 0, nvalues = 0, nints = 0, nbytes = 0;
    for (int k = 0; k < n; k++) {
        const fl_db_stmt_t *s = &stmts[k];
        nvalues += (size_t)s->nparams;
        nints += (size_t)s->nparams * ((s->lengths != NULL) + (s->formats != NULL));
        bool ok = grow(&nbytes, strlen(s->sql) + 1);
        for (int i = 0; ok && i < s->nparams; i++)
            ok = s->values[i] == NULL || grow(&nbytes, value_size(s, i));
        if (!ok)
            return NULL;
    }
    size_t size = sizeof(db_request_t) + (size_t)n * sizeof(fl_db_stmt_t) + nresults * sizeof(PGresult *);
    if (!grow(&size, nvalues * sizeof(char *)) || !grow(&size, nints * sizeof(int)) || !grow(&size, nbytes))
        return NULL;
    db_request_t *r = fl_malloc(size);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->failed_index = -1;
    r->nstmts = n;
    char *at = (char *)(r + 1);
    r->stmts = (void *)at;
    at += (size_t)n * sizeof(fl_db_stmt_t);
    if (nresults > 0) {
        r->results = (void *)at;
        memset(r->results, 0, nresults * sizeof(PGresult *));
        at += nresults * sizeof(PGresult *);
    }
    const char **values = (void *)at;
    int *ints = (void *)(at + nvalues * sizeof(char *));
    char *bytes = (char *)(ints + nints);

    for (int k = 0; k < n; k++) {
        const fl_db_stmt_t *s = &stmts[k];
        fl_db_stmt_t *copy = &r->stmts[k];
        *copy = (fl_db_stmt_t){.nparams = s->nparams};
        size_t len = strlen(s->sql) + 1;
        memcpy(bytes, s->sql, len);
        copy->sql = bytes;
        bytes += len;
        if (s->nparams == 0)
            continue;
        for (int i = 0; i < s->nparams; i++) {
            if (s->values[i] == NULL) {
                values[i] = NULL;
                continue;
            }
            len = value_size(s, i);
            if (len > 0)
                memcpy(bytes, s->values[i], len);
            values[i] = bytes;
            bytes += len;
        }
        copy->values = values;
        values += s->nparams;
        if (s->lengths != NULL) {
            memcpy(ints, s->lengths, (size_t)s->nparams * sizeof(int));
            copy->lengths = ints;
            ints += s->nparams;
        }
        if (s->formats != NULL) {
            memcpy(ints, s->formats, (size_t)s->nparams * sizeof(int));
            copy->formats = ints;
            ints += s->nparams;
        }
    }
    return r;
}

db_request_t *db_request_sql(db_request_kind_t kind, const char *sql)
{
    fl_db_stmt_t stmt = {.sql = sql};
    return db_request_new(kind, &stmt, 1);
}

void db_request_free(db_request_t *r)
{
    if (r == NULL)
        return;
    PQclear(r->res);
    for (int i = 0; r->results != NULL && i < r->nstmts; i++)
        PQclear(r->results[i]);
    fl_free(r);
}

static atomic_long failed_unavailable, failed_refused, failed_timeout;

void fl_db_failure_counts(fl_db_failures_t *out)
{
    out->unavailable = atomic_load_explicit(&failed_unavailable, memory_order_relaxed);
    out->refused = atomic_load_explicit(&failed_refused, memory_order_relaxed);
    out->timeout = atomic_load_explicit(&failed_timeout, memory_order_relaxed);
}

void db_request_finish(db_request_t *r, int status, PGresult *res, const char *err)
{
    if (status == FL_EUNAVAIL)
        atomic_fetch_add_explicit(&failed_unavailable, 1, memory_order_relaxed);
    else if (status == FL_EIO)
        atomic_fetch_add_explicit(&failed_refused, 1, memory_order_relaxed);
    else if (status == FL_ETIMEDOUT)
        atomic_fetch_add_explicit(&failed_timeout, 1, memory_order_relaxed);
    fl_assert(!r->finished);
    r->finished = true;
    r->status = status;
    r->res = res;
    snprintf(r->err, sizeof(r->err), "%s", err != NULL ? err : "");
}

void db_queue_push(db_queue_t *q, db_request_t *r)
{
    r->next = NULL;
    if (q->tail != NULL)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->count++;
}

void db_queue_push_front(db_queue_t *q, db_request_t *r)
{
    r->next = q->head;
    q->head = r;
    if (q->tail == NULL)
        q->tail = r;
    q->count++;
}

db_request_t *db_queue_pop(db_queue_t *q)
{
    db_request_t *r = q->head;
    if (r == NULL)
        return NULL;
    q->head = r->next;
    if (q->head == NULL)
        q->tail = NULL;
    q->count--;
    r->next = NULL;
    return r;
}

void db_queue_splice(db_queue_t *to, db_queue_t *from)
{
    if (from->head == NULL)
        return;
    if (to->tail != NULL)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    to->count += from->count;
    *from = (db_queue_t){0};
}

int64_t db_queue_expire(db_queue_t *q, int64_t now, db_queue_t *expired)
{
    int64_t earliest = INT64_MAX;
    db_queue_t keep = {0};
    for (db_request_t *r = q->head, *next; r != NULL; r = next) {
        next = r->next;
        if (r->deadline_ms <= now) {
            db_queue_push(expired, r);
        } else {
            db_queue_push(&keep, r);
            if (r->deadline_ms < earliest)
                earliest = r->deadline_ms;
        }
    }
    *q = keep;
    return earliest;
}

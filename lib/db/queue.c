/* Queries waiting for a connection: each request is one allocation, the queue a plain FIFO. */
#include "db_internal.h"

#include <stdio.h>
#include <string.h>

db_request_t *db_request_new(const char *sql, int nparams, const char *const *values)
{
    size_t sqllen = strlen(sql) + 1, size = sizeof(db_request_t) + (size_t)nparams * sizeof(char *) + sqllen;
    for (int i = 0; i < nparams; i++)
        if (values[i] != NULL)
            size += strlen(values[i]) + 1;
    db_request_t *r = fl_malloc(size);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));

    const char **copies = (const char **)(r + 1);
    char *text = (char *)(copies + nparams);
    memcpy(text, sql, sqllen);
    r->sql = text;
    text += sqllen;
    for (int i = 0; i < nparams; i++) {
        if (values[i] == NULL) {
            copies[i] = NULL;
            continue;
        }
        size_t len = strlen(values[i]) + 1;
        memcpy(text, values[i], len);
        copies[i] = text;
        text += len;
    }
    r->nparams = nparams;
    r->values = copies;
    return r;
}

void db_request_free(db_request_t *r)
{
    if (r == NULL)
        return;
    PQclear(r->res);
    fl_free(r);
}

void db_request_finish(db_request_t *r, int status, PGresult *res, const char *err)
{
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

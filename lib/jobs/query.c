/* Queries whose results come back to an actor as a message: the result callback runs outside the
 * actor's handler, so it only copies the rows and hands them to the handler, where the state is. */
#include "jobs_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    jobs_rows_t rows; /* first: the message data is this struct */
    fl_actor_t *self;
    int type;
} pending_t;

void jobs_rows_free(void *p)
{
    jobs_rows_t *r = p;
    if (r == NULL)
        return;
    if (r->tag_dtor && r->tag)
        r->tag_dtor(r->tag);
    fl_free(r->cells); /* the cells live in the same block */
    fl_free(r);
}

long jobs_affected(const PGresult *res)
{
    const char *n = PQcmdTuples((PGresult *)(uintptr_t)res);
    return n && n[0] ? atol(n) : 0;
}

/* Copies every cell into one block: the pointer array, then the strings. */
static int copy_rows(jobs_rows_t *r, const PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    r->affected = jobs_affected(res);
    if (nrows == 0 || ncols == 0)
        return FL_OK;
    size_t ncells = (size_t)nrows * (size_t)ncols, bytes = ncells * sizeof(char *);
    for (int i = 0; i < nrows; i++)
        for (int j = 0; j < ncols; j++)
            bytes += PQgetisnull(res, i, j) ? 0 : (size_t)PQgetlength(res, i, j) + 1;
    char **cells = fl_malloc(bytes);
    if (cells == NULL)
        return FL_ENOMEM;
    char *p = (char *)(cells + ncells);
    for (int i = 0; i < nrows; i++) {
        for (int j = 0; j < ncols; j++) {
            char **cell = &cells[(size_t)i * (size_t)ncols + (size_t)j];
            if (PQgetisnull(res, i, j)) {
                *cell = NULL;
                continue;
            }
            size_t len = (size_t)PQgetlength(res, i, j);
            memcpy(p, PQgetvalue(res, i, j), len + 1);
            *cell = p;
            p += len + 1;
        }
    }
    r->cells = cells;
    r->nrows = nrows;
    r->ncols = ncols;
    return FL_OK;
}

static void on_result(const PGresult *res, int status, const char *err, void *arg)
{
    pending_t *p = arg;
    fl_actor_t *self = p->self;
    jobs_rows_t *r = &p->rows;
    r->status = status;
    if (status == FL_OK && (r->status = copy_rows(r, res)) != FL_OK)
        snprintf(r->err, sizeof(r->err), "no memory for the result");
    else if (status != FL_OK)
        snprintf(r->err, sizeof(r->err), "%s", err ? err : fl_strerror(status));
    /* an actor's note to itself, bounded by its own queries in flight; if it has ended the rows
     * are freed at once, and the tag released with them */
    fl_actor_notify(self, p->type, r, jobs_rows_free);
    fl_actor_unref(self);
}

int jobs_query(fl_actor_t *self, int type, fl_db_t *db, const char *sql, int nparams, const char *const *values, void *tag,
               void (*tag_dtor)(void *))
{
    if (db == NULL)
        return FL_EUNAVAIL;
    /* the message is allocated now, so that a result can always be delivered */
    pending_t *p = fl_calloc(1, sizeof(*p));
    if (p == NULL)
        return FL_ENOMEM;
    p->self = self;
    p->type = type;
    fl_actor_ref(self);
    int rc = fl_db_query(db, sql, nparams, values, on_result, p);
    if (rc != FL_OK) {
        fl_actor_unref(self);
        fl_free(p);
        return rc;
    }
    p->rows.tag = tag;
    p->rows.tag_dtor = tag_dtor;
    return FL_OK;
}

#include "core.h"

#include <stdatomic.h>
#include <string.h>

struct fl_blob {
    atomic_int refs;
    size_t len;
    char data[];
};

fl_blob_t *fl_blob_new(size_t len)
{
    fl_blob_t *b = fl_malloc(sizeof(*b) + len + 1);
    if (b == NULL)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    b->data[len] = '\0';
    return b;
}

fl_blob_t *fl_blob_from(const void *data, size_t len)
{
    fl_blob_t *b = fl_blob_new(len);
    if (b)
        memcpy(b->data, data, len);
    return b;
}

char *fl_blob_data(fl_blob_t *blob)
{
    return blob->data;
}

size_t fl_blob_len(const fl_blob_t *blob)
{
    return blob->len;
}

fl_blob_t *fl_blob_ref(fl_blob_t *blob)
{
    atomic_fetch_add_explicit(&blob->refs, 1, memory_order_relaxed);
    return blob;
}

void fl_blob_unref(fl_blob_t *blob)
{
    if (blob && atomic_fetch_sub_explicit(&blob->refs, 1, memory_order_acq_rel) == 1)
        fl_free(blob);
}

void fl_blob_release(void *blob)
{
    fl_blob_unref(blob);
}

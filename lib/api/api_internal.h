/* Shared by the api's route files. */
#ifndef FL_API_INTERNAL_H
#define FL_API_INTERNAL_H

#include "api.h"

#include <pthread.h>
#include <stdatomic.h>

struct fl_api {
    fl_api_deps_t deps;
    atomic_bool draining;
    pthread_mutex_t lock; /* guards root */
    fl_actor_t *root;
};

/* The tree's root (a reference the caller drops), or NULL when the tree is not up. */
fl_actor_t *fl_api_root(fl_api_t *api);

int fl_api_health_routes(fl_api_t *api, fl_http_router_t *router);
int fl_api_admin_routes(fl_api_t *api, fl_http_router_t *router);

#endif

/* The operators' live map: GET / (index.html), GET /config.json (the map's settings) and the files
 * under /assets/; the on-call view of the supervision tree: GET /admin (admin.html). Every file is read once at start from the web
 * directory (FLEETD_WEB_DIR, or the one found beside the binary or installed) into memory, so a request is a map lookup: only names
 * read at start exist, which makes path traversal impossible by construction. */
#include "api_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FLEETD_WEB_INSTALL_DIR
#define FLEETD_WEB_INSTALL_DIR "/usr/local/share/fleetd/web"
#endif

/* The map's files are small (Leaflet, the phoenix client, our own): these bound a wrong directory. */
enum { MAX_FILES = 256, MAX_NAME = 128 };
#define MAX_FILE_BYTES  (4L * 1024 * 1024)
#define MAX_TOTAL_BYTES (32L * 1024 * 1024)

typedef struct {
    char *body;
    size_t len;
    const char *type;
    char etag[36]; /* "\"" + 32 hex + "\"" */
} web_file_t;

struct fl_api_web {
    char dir[PATH_MAX];
    bool loaded;      /* index.html was read */
    fl_map_t *files;  /* "/index.html", "/assets/app.js", "/assets/images/x.png" -> web_file_t */
    web_file_t *conf; /* /config.json */
    char csp[640];    /* Content-Security-Policy of the page */
    long bytes;
};

static const struct {
    const char *ext, *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".png", "image/png"},
    {".svg", "image/svg+xml"},
    {".json", "application/json; charset=utf-8"},
};

static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

/* A file name the map may serve: [A-Za-z0-9._-], not hidden, with a known type. */
static bool servable(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > MAX_NAME || name[0] == '.')
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' ||
              *c == '-'))
            return false;
    return type_of(name) != NULL;
}

static void file_free(void *p)
{
    web_file_t *f = p;
    if (f == NULL)
        return;
    fl_free(f->body);
    fl_free(f);
}

static web_file_t *file_new(char *body, size_t len, const char *type)
{
    web_file_t *f = fl_calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->body = body;
    f->len = len;
    f->type = type;
    unsigned char hash[16];
    crypto_generichash(hash, sizeof(hash), (const unsigned char *)body, len, NULL, 0);
    f->etag[0] = '"';
    sodium_bin2hex(f->etag + 1, 33, hash, sizeof(hash));
    f->etag[33] = '"';
    f->etag[34] = '\0';
    return f;
}

/* Reads path (a regular file within the limits) into a new buffer. */
static int read_file(const char *path, long budget, char **out, size_t *outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? FL_ENOTFOUND : FL_EIO;
    int rc = FL_EIO;
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        goto close_fd;
    rc = FL_ERANGE;
    if (st.st_size > MAX_FILE_BYTES || st.st_size > budget)
        goto close_fd;
    rc = FL_ENOMEM;
    buf = fl_malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        goto close_fd;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = FL_EIO;
            goto free_buf;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *outlen = got;
    close(fd);
    return FL_OK;
free_buf:
    fl_free(buf);
close_fd:
    close(fd);
    return rc;
}

/* Reads dir/rel/name and files it under key "/rel/name". */
static int add_file(fl_api_web_t *w, const char *rel, const char *name)
{
    char path[PATH_MAX], key[MAX_NAME * 2 + 16];
    int n = snprintf(path, sizeof(path), "%s/%s%s%s", w->dir, rel, rel[0] ? "/" : "", name);
    int k = snprintf(key, sizeof(key), "/%s%s%s", rel, rel[0] ? "/" : "", name);
    if (n < 0 || (size_t)n >= sizeof(path) || k < 0 || (size_t)k >= sizeof(key))
        return FL_ERANGE;
    if (fl_map_count(w->files) >= MAX_FILES)
        return FL_EFULL;
    char *body;
    size_t len;
    int rc = read_file(path, MAX_TOTAL_BYTES - w->bytes, &body, &len);
    if (rc != FL_OK) {
        if (rc != FL_ENOTFOUND)
            fl_log(FL_LOG_WARN, "web.file_skipped", FL_MSG("a file of the live map was not loaded"), FL_STR("path", path),
                   FL_STR("error", rc == FL_ERANGE ? "too large" : fl_strerror(rc)));
        return rc;
    }
    web_file_t *f = file_new(body, len, type_of(name));
    if (f == NULL) {
        fl_free(body);
        return FL_ENOMEM;
    }
    void *old = NULL;
    if (fl_map_put(w->files, key, f, &old) != FL_OK) {
        file_free(f);
        return FL_ENOMEM;
    }
    file_free(old);
    w->bytes += (long)len;
    return FL_OK;
}

/* Every servable file directly in dir/rel (not recursive). */
static void add_dir(fl_api_web_t *w, const char *rel)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", w->dir, rel);
    if (n < 0 || (size_t)n >= sizeof(path))
        return;
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (servable(e->d_name) && add_file(w, rel, e->d_name) == FL_EFULL)
            break;
    closedir(d);
}

static bool has_index(const char *dir)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/index.html", dir);
    return n > 0 && (size_t)n < sizeof(path) && access(path, R_OK) == 0;
}

/* FLEETD_WEB_DIR, else the first of: web/ beside the binary (a build tree), ../share/fleetd/web
 * beside it (a relocated install), the install prefix's share/fleetd/web. */
static void choose_dir(const fl_config_t *cfg, char *out, size_t outlen)
{
    if (cfg->web_dir && cfg->web_dir[0]) {
        snprintf(out, outlen, "%s", cfg->web_dir);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        char candidate[PATH_MAX];
        static const char *const rel[] = {"web", "../share/fleetd/web"};
        for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
            int len = snprintf(candidate, sizeof(candidate), "%s/%s", exe, rel[i]);
            char real[PATH_MAX];
            if (len > 0 && (size_t)len < sizeof(candidate) && has_index(candidate)) {
                snprintf(out, outlen, "%s", realpath(candidate, real) ? real : candidate);
                return;
            }
        }
    }
    snprintf(out, outlen, "%s", FLEETD_WEB_INSTALL_DIR);
}

/* The origin a tile template loads from, as a CSP source ("{s}." subdomains as a wildcard), or ""
 * for tiles from this server ('self' covers them); the scheme alone when the host is not plain. */
static void tile_source(const char *tiles, char *out, size_t outlen)
{
    out[0] = '\0';
    const char *sep = tiles ? strstr(tiles, "://") : NULL;
    if (sep == NULL)
        return;
    int scheme = (int)(sep - tiles); /* "https" */
    const char *host = sep + 3;
    size_t len = strcspn(host, "/");
    bool wildcard = strncmp(host, "{s}.", 4) == 0;
    if (wildcard) {
        host += 3;
        len -= 3;
    }
    bool plain = len > 0 && len < 200;
    for (size_t i = 0; plain && i < len; i++)
        plain = (host[i] >= 'a' && host[i] <= 'z') || (host[i] >= 'A' && host[i] <= 'Z') || (host[i] >= '0' && host[i] <= '9') ||
                host[i] == '.' || host[i] == '-' || host[i] == ':';
    if (plain)
        snprintf(out, outlen, "%.*s://%s%.*s", scheme, tiles, wildcard ? "*" : "", (int)len, host);
    else
        snprintf(out, outlen, "%.*s:", scheme, tiles);
}

static int build_config(fl_api_web_t *w, const fl_config_t *cfg)
{
    const char *tiles = cfg->map_tiles ? cfg->map_tiles : "";
    json_t *doc = json_pack("{s:s, s:s, s:s}", "map_tiles", tiles, "map_attribution",
                            cfg->map_attribution ? cfg->map_attribution : "", "version", FLEETD_VERSION);
    if (doc == NULL) {
        fl_log(FL_LOG_ERROR, "web.bad_setting", FL_MSG("FLEETD_MAP_TILES and FLEETD_MAP_ATTRIBUTION must be UTF-8 text"));
        return FL_EINVAL;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text == NULL)
        return FL_ENOMEM;
    char *body = fl_strdup(text);
    free(text);
    if (body == NULL || (w->conf = file_new(body, strlen(body), "application/json")) == NULL) {
        fl_free(body);
        return FL_ENOMEM;
    }

    char source[300];
    tile_source(tiles, source, sizeof(source));
    snprintf(w->csp, sizeof(w->csp),
             "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:%s%s; connect-src 'self'; "
             "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
             source[0] ? " " : "", source);
    return FL_OK;
}

int fl_api_web_new(fl_api_t *api)
{
    static const fl_config_t defaults = {0};
    const fl_config_t *cfg = api->deps.cfg ? api->deps.cfg : &defaults;
    fl_api_web_t *w = fl_calloc(1, sizeof(*w));
    if (w == NULL || (w->files = fl_map_new()) == NULL) {
        fl_free(w);
        return FL_ENOMEM;
    }
    api->web = w;
    int rc = build_config(w, cfg);
    if (rc != FL_OK)
        return rc;
    choose_dir(cfg, w->dir, sizeof(w->dir));
    w->loaded = add_file(w, "", "index.html") == FL_OK;
    if (!w->loaded) {
        fl_log(FL_LOG_WARN, "web.missing",
               FL_MSG("the live map's files are not there: GET / answers 503 (set FLEETD_WEB_DIR, or build or install them)"),
               FL_STR("dir", w->dir));
        return FL_OK;
    }
    add_file(w, "", "admin.html"); /* GET /admin: 404 when an older web directory lacks it */
    add_dir(w, "assets");
    add_dir(w, "assets/images");
    fl_log(FL_LOG_INFO, "web.loaded", FL_MSG("the live map's files are in memory"), FL_STR("dir", w->dir),
           FL_INT("files", fl_map_count(w->files)), FL_INT("bytes", w->bytes));
    return FL_OK;
}

void fl_api_web_free(fl_api_t *api)
{
    fl_api_web_t *w = api->web;
    if (w == NULL)
        return;
    fl_map_free(w->files, file_free);
    file_free(w->conf);
    fl_free(w);
    api->web = NULL;
}

/* ---- answering ----------------------------------------------------------------------------------- */

bool fl_api_etag_matches(const char *if_none_match, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = if_none_match;
    for (;;) {
        p += strspn(p, " \t,");
        if (*p == '\0')
            return false;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (*p == '"') {
            const char *close = strchr(p + 1, '"');
            if (close == NULL)
                return false;
            if ((size_t)(close + 1 - p) == elen && memcmp(p, etag, elen) == 0)
                return true;
            p = close + 1;
        }
        p += strcspn(p, ",");
    }
}

/* Files are not fingerprinted, so the browser revalidates each time (a 304 costs a few bytes). */
static void send_file(fl_http_req_t *req, const web_file_t *f, const char *csp)
{
    fl_http_set_header(req, "ETag", f->etag);
    fl_http_set_header(req, "Cache-Control", "no-cache");
    fl_http_set_header(req, "X-Content-Type-Options", "nosniff");
    if (csp)
        fl_http_set_header(req, "Content-Security-Policy", csp);
    const char *inm = fl_http_req_header(req, "If-None-Match");
    if (inm && fl_api_etag_matches(inm, f->etag)) {
        fl_http_respond(req, 304, NULL, NULL, 0);
        return;
    }
    /* the bytes live until fl_api_free, which runs after the server is freed */
    fl_http_respond_ref(req, 200, f->type, f->body, f->len, NULL, NULL);
}

static bool unavailable(fl_http_req_t *req, const fl_api_web_t *w)
{
    if (w->loaded)
        return false;
    char message[PATH_MAX + 96];
    snprintf(message, sizeof(message), "the live map is not installed: no index.html in %s (FLEETD_WEB_DIR)", w->dir);
    fl_http_respond_error(req, 503, "unavailable", message);
    return true;
}

static void get_index(fl_http_req_t *req, void *arg)
{
    fl_api_web_t *w = ((fl_api_t *)arg)->web;
    if (!unavailable(req, w))
        send_file(req, fl_map_get(w->files, "/index.html"), w->csp);
}

static void get_admin(fl_http_req_t *req, void *arg)
{
    fl_api_web_t *w = ((fl_api_t *)arg)->web;
    if (unavailable(req, w))
        return;
    const web_file_t *f = fl_map_get(w->files, "/admin.html");
    if (f == NULL)
        fl_http_respond_error(req, 404, "not_found", "the admin page is not installed: no admin.html beside index.html");
    else
        send_file(req, f, w->csp);
}

static void get_config(fl_http_req_t *req, void *arg)
{
    send_file(req, ((fl_api_t *)arg)->web->conf, NULL);
}

/* The request's path as sent is the key: no percent-decoding, so no encoded slash, dot or NUL can
 * name anything but a file read at start. */
static void get_asset(fl_http_req_t *req, void *arg)
{
    fl_api_web_t *w = ((fl_api_t *)arg)->web;
    if (unavailable(req, w))
        return;
    const char *path = fl_http_req_path(req);
    const web_file_t *f = fl_map_get(w->files, path);
    if (f == NULL) {
        char message[200];
        snprintf(message, sizeof(message), "no file %.160s", path);
        fl_http_respond_error(req, 404, "not_found", message);
        return;
    }
    send_file(req, f, NULL);
}

int fl_api_web_routes(fl_api_t *api, fl_http_router_t *router)
{
    int rc = fl_http_router_add(router, FL_HTTP_GET, "/", get_index, api, 0);
    if (rc == FL_OK)
        rc = fl_http_router_add(router, FL_HTTP_GET, "/index.html", get_index, api, 0);
    if (rc == FL_OK)
        rc = fl_http_router_add(router, FL_HTTP_GET, "/config.json", get_config, api, 0);
    if (rc == FL_OK)
        rc = fl_http_router_add(router, FL_HTTP_GET, "/admin", get_admin, api, 0);
    if (rc == FL_OK)
        rc = fl_http_router_add(router, FL_HTTP_GET, "/assets/{name}", get_asset, api, 0);
    if (rc == FL_OK)
        rc = fl_http_router_add(router, FL_HTTP_GET, "/assets/images/{name}", get_asset, api, 0);
    return rc;
}

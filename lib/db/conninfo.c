/* Connection parameters from DATABASE_URL, and libpq's messages made into one safe line. */
#include "db_internal.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void db_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The password as written in a URI (user:PASSWORD@host) or a key=value string, so it can be
 * scrubbed even from the message of a conninfo libpq could not parse. */
static char *find_raw_password(const char *conninfo)
{
    const char *scheme = strstr(conninfo, "://");
    if (scheme != NULL) {
        const char *auth = scheme + 3;
        size_t authlen = strcspn(auth, "/?");
        const char *at = NULL;
        for (const char *c = auth; c < auth + authlen; c++)
            if (*c == '@')
                at = c;
        if (at == NULL)
            return NULL;
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        return colon != NULL && at > colon + 1 ? fl_strndup(colon + 1, (size_t)(at - colon - 1)) : NULL;
    }
    for (const char *c = strstr(conninfo, "password"); c != NULL; c = strstr(c + 1, "password")) {
        const char *v = c + strlen("password");
        while (isspace((unsigned char)*v))
            v++;
        if (*v != '=')
            continue;
        v++;
        while (isspace((unsigned char)*v))
            v++;
        size_t len = *v == '\'' ? strcspn(++v, "'") : strcspn(v, " \t\r\n");
        return len > 0 ? fl_strndup(v, len) : NULL;
    }
    return NULL;
}

int db_params_init(db_params_t *p, const char *conninfo, const char *app_name, int statement_timeout_ms, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    if (conninfo == NULL)
        conninfo = "";
    char *perr = NULL;
    p->parsed = PQconninfoParse(conninfo, &perr);
    if (p->parsed == NULL) {
        char why[256];
        db_message(NULL, conninfo, perr != NULL ? perr : "out of memory", why, sizeof(why));
        db_errf(err, errlen, "invalid connection string: %s", why);
        int rc = perr != NULL ? FL_EINVAL : FL_ENOMEM;
        PQfreemem(perr);
        return rc;
    }

    size_t n = 0;
    const char *user_options = NULL;
    for (PQconninfoOption *o = p->parsed; o->keyword; o++) {
        n++;
        if (strcmp(o->keyword, "options") == 0)
            user_options = o->val;
    }
    p->keys = fl_calloc(n + 3, sizeof(*p->keys));
    p->values = fl_calloc(n + 3, sizeof(*p->values));
    if (conninfo[0] != '\0')
        p->raw_password = find_raw_password(conninfo);
    if (statement_timeout_ms > 0) {
        /* The server ends a statement that runs too long, so the connection survives it. */
        char extra[64];
        snprintf(extra, sizeof(extra), "-c statement_timeout=%d", statement_timeout_ms);
        size_t len = (user_options ? strlen(user_options) + 1 : 0) + strlen(extra) + 1;
        p->options = fl_malloc(len);
        if (p->options != NULL)
            snprintf(p->options, len, "%s%s%s", user_options ? user_options : "", user_options ? " " : "", extra);
    }
    if (p->keys == NULL || p->values == NULL || (statement_timeout_ms > 0 && p->options == NULL)) {
        db_params_free(p);
        db_errf(err, errlen, "out of memory");
        return FL_ENOMEM;
    }

    size_t k = 0;
    for (PQconninfoOption *o = p->parsed; o->keyword; o++) {
        const char *val = strcmp(o->keyword, "options") == 0 && p->options != NULL ? p->options : o->val;
        if (val == NULL || strcmp(o->keyword, "fallback_application_name") == 0)
            continue;
        p->keys[k] = o->keyword;
        p->values[k++] = val;
    }
    if (user_options == NULL && p->options != NULL) {
        p->keys[k] = "options";
        p->values[k++] = p->options;
    }
    p->keys[k] = "fallback_application_name";
    p->values[k++] = app_name;
    p->keys[k] = NULL;
    p->values[k] = NULL;
    return FL_OK;
}

void db_params_free(db_params_t *p)
{
    if (p->parsed != NULL)
        PQconninfoFree(p->parsed);
    fl_free(p->keys);
    fl_free(p->values);
    fl_free(p->options);
    if (p->raw_password != NULL)
        memset(p->raw_password, 0, strlen(p->raw_password));
    fl_free(p->raw_password);
    memset(p, 0, sizeof(*p));
}

static const char *parsed_password(const db_params_t *p)
{
    if (p == NULL || p->parsed == NULL)
        return NULL;
    for (PQconninfoOption *o = p->parsed; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0)
            return o->val;
    return NULL;
}

static size_t secret_at(const char *s, const char *const *secrets, size_t nsecrets)
{
    for (size_t i = 0; i < nsecrets; i++) {
        size_t len = secrets[i] ? strlen(secrets[i]) : 0;
        if (len > 0 && strncmp(s, secrets[i], len) == 0)
            return len;
    }
    return 0;
}

void db_message(const db_params_t *p, const char *conninfo, const char *msg, char *out, size_t outlen)
{
    if (out == NULL || outlen == 0)
        return;
    char *from_conninfo = conninfo != NULL && (p == NULL || p->raw_password == NULL) ? find_raw_password(conninfo) : NULL;
    const char *secrets[] = {parsed_password(p), p != NULL ? p->raw_password : NULL, from_conninfo};
    size_t nsecrets = sizeof(secrets) / sizeof(secrets[0]);

    size_t len = 0;
    bool newline = false, indented = false, space = false;
    for (const char *s = msg ? msg : ""; *s && len + 1 < outlen;) {
        if (isspace((unsigned char)*s)) {
            indented = newline && *s != '\n';
            newline |= *s == '\n';
            space = true;
            s++;
            continue;
        }
        if (len > 0 && (newline || space)) {
            /* A new line starts a new message; an indented one continues the last, and gets "; "
             * only when it starts a sentence of its own. */
            const char *sep = " ";
            if (newline && (!indented || isupper((unsigned char)*s)) && !strchr(":;.", out[len - 1]))
                sep = "; ";
            for (; *sep && len + 1 < outlen; sep++)
                out[len++] = *sep;
        }
        newline = indented = space = false;
        size_t skip = secret_at(s, secrets, nsecrets);
        if (skip > 0) {
            for (const char *stars = "***"; *stars && len + 1 < outlen; stars++)
                out[len++] = *stars;
            s += skip;
            continue;
        }
        out[len++] = *s++;
    }
    out[len] = '\0';
    if (from_conninfo != NULL)
        memset(from_conninfo, 0, strlen(from_conninfo));
    fl_free(from_conninfo);
}

void db_notice_processor(void *arg, const char *message)
{
    (void)arg;
    char line[512];
    db_message(NULL, NULL, message, line, sizeof(line));
    fl_log(FL_LOG_DEBUG, "db.notice", FL_MSG(line));
}

int db_error_status(const PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state == NULL)
        return FL_EUNAVAIL; /* made by libpq: the connection is gone */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
        return FL_EUNAVAIL;
    if (strcmp(state, "57014") == 0)
        return FL_ETIMEDOUT;
    return FL_EIO;
}

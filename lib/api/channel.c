/*
 * Phoenix Channels v2 at /socket/websocket (CONTRACT.md, "Live"): the official phoenix client's
 * socket, its heartbeats, and fleet:{id} channels with a snapshot or a replay on join, positions
 * from the live hub, and Presence.
 *
 * Frames are JSON arrays [join_ref, ref, topic, event, payload]. Everything about one socket runs
 * on its shard; the asynchronous steps of a join (the token, the tracker) come back to that shard
 * and find their channel again by topic and join generation, so a leave or a close meanwhile
 * simply makes their answer moot.
 */
#include "live.h"
#include "presence.h"

#include "http/ws.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHANNELS    64 /* fleet channels one socket may join */
#define MAX_JOINING     4  /* joins of one socket waiting for their token check or tracker */
#define JOIN_TIMEOUT_MS 5000

typedef struct sock sock_t;

typedef enum { CH_JOINING, CH_JOINED } ch_state_t;

typedef struct channel {
    struct channel *next;
    sock_t *sock;
    ch_state_t state;
    unsigned gen;
    char topic[72]; /* "fleet:" + the fleet's id (fleet_of) */
    char join_ref[40];
    live_sub_t *positions, *presence;
    char presence_ref[24]; /* "" when not tracked */
} channel_t;

struct sock {
    fl_api_t *api;
    fl_ws_t *ws;
    int refs; /* the connection, and each asynchronous step in flight */
    bool closed;
    bool rechecking;                  /* a heartbeat's token check is in flight */
    int joining;                      /* joins in flight (each may hold a request in a tracker's mailbox) */
    char token[FL_API_TOKEN_LEN + 1]; /* "" without one */
    channel_t *channels;
    int nchannels;
    unsigned next_gen;
};

/* The channel's fleet: its topic after "fleet:" (a join checks the topic before making one). */
static const char *fleet_of(const channel_t *c)
{
    return c->topic + 6;
}

/* ---- sending ------------------------------------------------------------------------------------ */

static void sock_unref(sock_t *s)
{
    if (--s->refs == 0)
        fl_free(s);
}

/* Sends [join_ref, ref, topic, event, payload] where payload is JSON text. */
static void send_frame(sock_t *s, const char *join_ref, const char *ref, const char *topic, const char *event, const char *payload,
                       size_t len)
{
    if (s->closed)
        return;
    json_t *head = json_pack("[s?, s?, s, s]", join_ref, ref, topic, event);
    char *text = head ? json_dumps(head, JSON_COMPACT) : NULL;
    json_decref(head);
    fl_strbuf_t b = {0};
    if (text) {
        fl_strbuf_add(&b, text, strlen(text) - 1); /* without the closing ']' */
        fl_strbuf_add(&b, ",", 1);
        fl_strbuf_add(&b, payload, len);
        fl_strbuf_add(&b, "]", 1);
    }
    free(text);
    int rc = text && !b.failed ? fl_ws_send_text(s->ws, b.p, b.len) : FL_ENOMEM;
    fl_strbuf_free(&b);
    if (rc == FL_EFULL)
        fl_ws_close(s->ws, 1008, "output limit reached: too far behind");
    else if (rc == FL_ENOMEM)
        fl_ws_close(s->ws, 1011, "out of memory");
}

static void reply_json(sock_t *s, const char *join_ref, const char *ref, const char *topic, const char *status, json_t *response)
{
    json_t *payload = json_pack("{s:s, s:o}", "status", status, "response", response ? response : json_object());
    char *text = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    json_decref(payload);
    if (text == NULL) {
        fl_ws_close(s->ws, 1011, "out of memory");
        return;
    }
    send_frame(s, join_ref, ref, topic, "phx_reply", text, strlen(text));
    free(text);
}

static void reply_error(sock_t *s, const char *join_ref, const char *ref, const char *topic, const char *reason)
{
    reply_json(s, join_ref, ref, topic, "error", json_pack("{s:s}", "reason", reason));
}

/* ---- channels ----------------------------------------------------------------------------------- */

static channel_t *find_channel(sock_t *s, const char *topic)
{
    for (channel_t *c = s->channels; c; c = c->next)
        if (strcmp(c->topic, topic) == 0)
            return c;
    return NULL;
}

/* Stops a channel's subscriptions and presence, and forgets it. */
static void channel_end(channel_t *c)
{
    sock_t *s = c->sock;
    for (channel_t **link = &s->channels; *link; link = &(*link)->next) {
        if (*link == c) {
            *link = c->next;
            s->nchannels--;
            break;
        }
    }
    fl_live_unsubscribe(c->positions);
    fl_live_unsubscribe(c->presence);
    if (c->presence_ref[0])
        fl_presence_leave(s->api->presence, fleet_of(c), c->presence_ref);
    fl_free(c);
}

/* The hub lost a channel's subscription (pubsub restarted) or the socket fell too far behind. */
static void on_lost(live_sub_t *sub, bool behind, void *arg)
{
    (void)sub;
    channel_t *c = arg;
    sock_t *s = c->sock;
    if (behind) {
        fl_log(FL_LOG_WARN, "live.too_slow", FL_MSG("closing a WebSocket that fell too far behind"),
               FL_STR("peer", fl_ws_peer(s->ws)), FL_STR("fleet", fleet_of(c)));
        fl_ws_close(s->ws, 1008, "too far behind: positions were coalesced for too long");
        return; /* on_close ends the channels */
    }
    /* the phoenix client answers phx_error by rejoining, with last_seq: the replay fills the gap */
    send_frame(s, c->join_ref, c->join_ref, c->topic, "phx_error", "{}", 2);
    channel_end(c);
}

static int subscribe(channel_t *c, bool presence, live_sub_t **out)
{
    live_target_t target = {
        .kind = LIVE_WS, .conn = c->sock->ws, .low_water = c->sock->api->deps.cfg->ws_output_max / 4, .lost = on_lost, .arg = c};
    return fl_live_subscribe(c->sock->api->live, fleet_of(c), presence, &target, out);
}

/* ---- join --------------------------------------------------------------------------------------- */

typedef struct {
    sock_t *sock;
    char topic[72];
    unsigned gen;
    char ref[40];
    bool has_last_seq;
    uint64_t last_seq;
    char key[260]; /* the presence key: the token's name */
} join_t;

/* The channel this join is for, if it is still waiting for it. */
static channel_t *join_channel(join_t *j)
{
    if (j->sock->closed)
        return NULL;
    channel_t *c = find_channel(j->sock, j->topic);
    return c && c->gen == j->gen && c->state == CH_JOINING ? c : NULL;
}

static void join_free(join_t *j)
{
    j->sock->joining--;
    sock_unref(j->sock);
    fl_free(j);
}

static void join_refused(join_t *j, channel_t *c, const char *reason)
{
    reply_error(j->sock, c->join_ref, j->ref, c->topic, reason);
    channel_end(c);
    join_free(j);
}

static void send_events(sock_t *s, const char *topic, fl_blob_t **events, int n)
{
    for (int i = 0; i < n; i++) {
        send_frame(s, NULL, NULL, topic, "position", fl_blob_data(events[i]), fl_blob_len(events[i]));
        fl_blob_unref(events[i]);
    }
}

static void track_presence(join_t *j, channel_t *c)
{
    sock_t *s = j->sock;
    char *state = NULL;
    if (subscribe(c, true, &c->presence) != FL_OK ||
        fl_presence_join(s->api->presence, fleet_of(c), j->key, c->presence_ref, &state) != FL_OK) {
        fl_log(FL_LOG_WARN, "live.presence_failed", FL_MSG("could not track a watcher's presence"), FL_STR("fleet", fleet_of(c)));
        fl_live_unsubscribe(c->presence); /* no diffs without a presence_state: the client would hold them forever */
        c->presence = NULL;
        return; /* positions still flow; only the watcher list misses this one */
    }
    fl_live_release(c->presence, 0);
    send_frame(s, c->join_ref, NULL, c->topic, "presence_state", state, strlen(state));
    free(state);
}

/* The join is answered: the reply (text), the events after it, then live. */
static void join_done(join_t *j, channel_t *c, const char *response, size_t len, uint64_t seq, fl_blob_t **events, int n)
{
    sock_t *s = j->sock;
    fl_strbuf_t b = {0};
    fl_strbuf_str(&b, "{\"status\":\"ok\",\"response\":");
    fl_strbuf_add(&b, response, len);
    fl_strbuf_add(&b, "}", 1);
    if (b.failed) {
        fl_strbuf_free(&b);
        for (int i = 0; i < n; i++)
            fl_blob_unref(events[i]);
        join_refused(j, c, "unavailable");
        return;
    }
    send_frame(s, c->join_ref, j->ref, c->topic, "phx_reply", b.p, b.len);
    fl_strbuf_free(&b);
    uint64_t last = seq;
    if (n > 0)
        last = fl_live_event_seq(fl_blob_data(events[n - 1]), fl_blob_len(events[n - 1]));
    send_events(s, c->topic, events, n);
    c->state = CH_JOINED;
    fl_live_release(c->positions, last);
    track_presence(j, c);
    join_free(j);
}

static void on_catch_up(int status, fl_blob_t *snapshot, uint64_t seq, fl_blob_t **events, int n, void *arg)
{
    join_t *j = arg;
    channel_t *c = join_channel(j);
    if (c == NULL) {
        for (int i = 0; i < n; i++)
            fl_blob_unref(events[i]);
        join_free(j);
        return;
    }
    if (status != FL_OK) {
        join_refused(j, c, status == FL_ENOTFOUND ? "not_found" : "unavailable");
        return;
    }
    fl_strbuf_t r = {0};
    if (snapshot) {
        /* {"seq":S, + the status JSON without its opening brace */
        fl_strbuf_printf(&r, "{\"seq\":%llu,", (unsigned long long)seq);
        fl_strbuf_add(&r, fl_blob_data(snapshot) + 1, fl_blob_len(snapshot) - 1);
    } else {
        fl_strbuf_str(&r, "{\"fleet_id\":\"");
        fl_strbuf_str(&r, fleet_of(c));
        fl_strbuf_printf(&r, "\",\"seq\":%llu,\"replayed\":%d}", (unsigned long long)seq, n);
    }
    if (r.failed) {
        fl_strbuf_free(&r);
        for (int i = 0; i < n; i++)
            fl_blob_unref(events[i]);
        join_refused(j, c, "unavailable");
        return;
    }
    join_done(j, c, r.p, r.len, seq, events, n);
    fl_strbuf_free(&r);
}

static void on_token(int status, const fl_api_token_t *token, void *arg)
{
    join_t *j = arg;
    channel_t *c = join_channel(j);
    if (c == NULL) {
        join_free(j);
        return;
    }
    if (status == FL_EUNAVAIL || status == FL_ENOMEM) {
        join_refused(j, c, "unavailable");
        return;
    }
    if (status != FL_OK) {
        join_refused(j, c, "unauthorized");
        return;
    }
    if (!fl_api_token_allows(token, fleet_of(c))) {
        join_refused(j, c, "not_found");
        return;
    }
    if (token->name && token->name[0])
        snprintf(j->key, sizeof(j->key), "%s", token->name);
    else
        snprintf(j->key, sizeof(j->key), "token-%lld", (long long)token->id);
    int rc = subscribe(c, false, &c->positions);
    if (rc == FL_OK)
        rc = fl_live_catch_up(j->sock->api->deps.trackers, fleet_of(c), j->has_last_seq, j->last_seq, JOIN_TIMEOUT_MS, on_catch_up,
                              j);
    if (rc != FL_OK)
        join_refused(j, c, "unavailable");
}

/* fleet:{id} with a valid fleet id. */
static bool fleet_topic(const char *topic)
{
    return strncmp(topic, "fleet:", 6) == 0 && fl_id_valid(topic + 6);
}

static void handle_join(sock_t *s, const char *join_ref, const char *ref, const char *topic, json_t *payload)
{
    if (!fleet_topic(topic)) {
        reply_error(s, join_ref, ref, topic, "unmatched topic");
        return;
    }
    json_t *last = json_object_get(payload, "last_seq");
    if (last && !json_is_null(last) && (!json_is_integer(last) || json_integer_value(last) < 0)) {
        reply_error(s, join_ref, ref, topic, "invalid last_seq");
        return;
    }
    if (s->joining >= MAX_JOINING) {
        /* a join replaced at once still has its tracker request queued: bound what one socket
         * can put in a fleet's mailbox, where ingest needs room */
        reply_error(s, join_ref, ref, topic, "too many joins in flight");
        return;
    }
    channel_t *old = find_channel(s, topic);
    if (old) {
        /* as Phoenix does: a second join of a topic replaces the first, which is closed */
        send_frame(s, old->join_ref, old->join_ref, old->topic, "phx_close", "{}", 2);
        channel_end(old);
    }
    if (s->nchannels >= MAX_CHANNELS) {
        reply_error(s, join_ref, ref, topic, "too many channels");
        return;
    }
    channel_t *c = fl_calloc(1, sizeof(*c));
    join_t *j = fl_calloc(1, sizeof(*j));
    if (c == NULL || j == NULL) {
        fl_free(c);
        fl_free(j);
        reply_error(s, join_ref, ref, topic, "unavailable");
        return;
    }
    c->sock = s;
    c->state = CH_JOINING;
    c->gen = ++s->next_gen;
    snprintf(c->topic, sizeof(c->topic), "%s", topic);
    snprintf(c->join_ref, sizeof(c->join_ref), "%s", join_ref ? join_ref : "");
    c->next = s->channels;
    s->channels = c;
    s->nchannels++;

    *j = (join_t){.sock = s, .gen = c->gen, .has_last_seq = last && json_is_integer(last)};
    if (j->has_last_seq)
        j->last_seq = (uint64_t)json_integer_value(last);
    snprintf(j->topic, sizeof(j->topic), "%s", topic);
    snprintf(j->ref, sizeof(j->ref), "%s", ref ? ref : "");
    s->refs++;
    s->joining++;
    if (!s->token[0]) {
        on_token(FL_ENOTFOUND, NULL, j);
        return;
    }
    fl_api_token_check(s->api, s->token, on_token, j);
}

static void handle_leave(sock_t *s, const char *join_ref, const char *ref, const char *topic)
{
    channel_t *c = find_channel(s, topic);
    if (c == NULL) {
        reply_error(s, join_ref, ref, topic, "unmatched topic");
        return;
    }
    reply_json(s, join_ref, ref, topic, "ok", NULL);
    send_frame(s, c->join_ref, c->join_ref, c->topic, "phx_close", "{}", 2);
    channel_end(c);
}

/* ---- revocation --------------------------------------------------------------------------------- */

/* A heartbeat (the phoenix client sends one every 30 s) also asks whether the socket's token still
 * holds, from the shard's token cache (renewed from the database at most every few seconds, at once
 * after SIGHUP). A revoked token closes the socket with 1008; the client's reconnect is then
 * refused at its join. A database that cannot answer keeps the socket: availability first. */
static void on_recheck(int status, const fl_api_token_t *token, void *arg)
{
    (void)token;
    sock_t *s = arg;
    s->rechecking = false;
    if (!s->closed && status == FL_ENOTFOUND) {
        fl_log(FL_LOG_INFO, "live.token_revoked", FL_MSG("closing a WebSocket whose token was revoked"),
               FL_STR("peer", fl_ws_peer(s->ws)));
        fl_ws_close(s->ws, 1008, "token revoked");
    }
    sock_unref(s);
}

static void recheck_token(sock_t *s)
{
    if (!s->token[0] || s->nchannels == 0 || s->rechecking)
        return;
    s->rechecking = true;
    s->refs++;
    fl_api_token_check(s->api, s->token, on_recheck, s);
}

/* ---- the socket --------------------------------------------------------------------------------- */

static const char *string_or_null(json_t *v, bool *ok)
{
    if (json_is_null(v))
        return NULL;
    if (!json_is_string(v) || json_string_length(v) >= 40)
        *ok = false;
    return json_string_value(v);
}

static void on_message(fl_ws_t *ws, const char *data, size_t len, bool binary, void *arg)
{
    sock_t *s = arg;
    json_t *msg = binary ? NULL : json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    bool ok = json_is_array(msg) && json_array_size(msg) == 5;
    const char *join_ref = ok ? string_or_null(json_array_get(msg, 0), &ok) : NULL;
    const char *ref = ok ? string_or_null(json_array_get(msg, 1), &ok) : NULL;
    const char *topic = ok ? json_string_value(json_array_get(msg, 2)) : NULL;
    const char *event = ok ? json_string_value(json_array_get(msg, 3)) : NULL;
    json_t *payload = ok ? json_array_get(msg, 4) : NULL;
    if (!ok || topic == NULL || event == NULL || !json_is_object(payload) || strlen(topic) > 71) {
        json_decref(msg);
        fl_ws_close(ws, 1008, "not a Phoenix v2 message: [join_ref, ref, topic, event, payload]");
        return;
    }
    if (strcmp(topic, "phoenix") == 0 && strcmp(event, "heartbeat") == 0) {
        reply_json(s, join_ref, ref, topic, "ok", NULL);
        recheck_token(s);
    } else if (strcmp(event, "phx_join") == 0)
        handle_join(s, join_ref, ref, topic, payload);
    else if (strcmp(event, "phx_leave") == 0)
        handle_leave(s, join_ref, ref, topic);
    else if (find_channel(s, topic))
        reply_error(s, join_ref, ref, topic, "unknown event");
    else
        reply_error(s, join_ref, ref, topic, "unmatched topic");
    json_decref(msg);
}

static void on_drain(fl_ws_t *ws, void *arg)
{
    (void)ws;
    sock_t *s = arg;
    for (channel_t *c = s->channels; c; c = c->next)
        if (c->state == CH_JOINED)
            fl_live_drain(c->positions);
}

static void on_close(fl_ws_t *ws, int code, const char *reason, void *arg)
{
    (void)ws;
    (void)code;
    (void)reason;
    sock_t *s = arg;
    s->closed = true;
    while (s->channels)
        channel_end(s->channels);
    sock_unref(s);
}

static void on_open(fl_ws_t *ws, void *arg)
{
    sock_t *s = arg;
    s->ws = ws;
}

static const fl_ws_handlers_t handlers = {.on_open = on_open, .on_message = on_message, .on_drain = on_drain, .on_close = on_close};

static void socket_route(fl_http_req_t *req, void *arg)
{
    fl_api_t *api = arg;
    const char *vsn = fl_http_req_query(req, "vsn");
    if (vsn && strncmp(vsn, "2.", 2) != 0) {
        fl_http_respond_error(req, 400, "unsupported_version", "only the Phoenix v2 serializer (vsn=2.0.0) is supported");
        return;
    }
    const char *token = fl_http_req_query(req, "token");
    if (token && token[0] && !fl_api_token_well_formed(token)) {
        /* checked again at each join; a malformed one can be refused before the upgrade */
        fl_http_set_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        fl_http_respond_error(req, 401, "unauthorized", "the token parameter is not a valid token");
        return;
    }
    sock_t *s = fl_calloc(1, sizeof(*s));
    if (s == NULL) {
        fl_http_respond_error(req, 503, "unavailable", "out of memory");
        return;
    }
    s->api = api;
    s->refs = 1;
    if (token)
        snprintf(s->token, sizeof(s->token), "%s", token);
    const fl_config_t *cfg = api->deps.cfg;
    fl_ws_opts_t opts = {.max_message = (size_t)cfg->ws_max_message,
                         .max_output = (size_t)cfg->ws_output_max,
                         .idle_timeout_ms = cfg->ws_idle_timeout_ms,
                         .origins = cfg->ws_origins,
                         .sndbuf = cfg->live_sndbuf};
    if (fl_ws_accept(req, &opts, &handlers, s) != FL_OK)
        fl_free(s); /* refused (answered with an error): the handlers never run */
}

int fl_api_channel_routes(fl_api_t *api, fl_http_router_t *router)
{
    return fl_http_router_add(router, FL_HTTP_GET, "/socket/websocket", socket_route, api, 0);
}

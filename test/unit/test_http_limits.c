/* lib/http limits and timeouts: 408 (header deadline with a trickling client, body deadline),
 * 411, 413 (by Content-Length before the body, and chunked), 415, 431 (bytes and count), idle
 * keep-alive close, write timeout, a handler that never answers, allocation failure -> 503. */
#include "test_http_support.h"

static void short_timeouts(fl_config_t *cfg)
{
    cfg->header_timeout_ms = 400;
    cfg->body_timeout_ms = 400;
    cfg->keepalive_timeout_ms = 400;
    cfg->write_timeout_ms = 400;
}

static void small_limits(fl_config_t *cfg)
{
    cfg->max_body_bytes = 1024;
    cfg->max_header_bytes = 1024;
    cfg->max_headers = 8;
}

static int setup_default(void **state)
{
    (void)state;
    return start_server(NULL);
}

static int setup_short_timeouts(void **state)
{
    (void)state;
    return start_server(short_timeouts);
}

static int setup_small_limits(void **state)
{
    (void)state;
    return start_server(small_limits);
}

static int setup_logged_short_timeouts(void **state)
{
    (void)state;
    W.capture_log = true; /* start_server keeps it */
    return start_server(short_timeouts);
}

/* One byte every 50 ms never completes a head; the deadline counts from the first byte and
 * does not move with each byte. */
static void header_deadline_cuts_a_trickling_client_off_with_408(void **state)
{
    (void)state;
    client_t *c = client_open();
    const char *req = "GET /sync HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    int64_t start = fl_now_mono_ms();
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    for (size_t i = 0; req[i] && poll(&p, 1, 0) == 0; i++) {
        send_bytes(c, req + i, 1);
        sleep_ms(50);
    }
    resp_t r;
    assert_true(read_response(c, &r, false));
    int64_t took = fl_now_mono_ms() - start;
    assert_error(&r, 408, "request_timeout");
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_true(took >= 350 && took < 1500);
    /* the trickle goes on: the server must have stopped listening to it */
    assert_true(peer_closed(c, 3000));
    client_close(c);
}

static void body_deadline_is_408(void **state)
{
    (void)state;
    client_t *c = client_open();
    int64_t start = fl_now_mono_ms();
    send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\nabc");
    resp_t r;
    assert_true(read_response(c, &r, false));
    int64_t took = fl_now_mono_ms() - start;
    assert_error(&r, 408, "request_timeout");
    assert_true(took >= 350 && took < 1500);
    assert_true(peer_closed(c, 3000));
    client_close(c);
}

static void idle_keep_alive_connection_is_closed_silently(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    int64_t start = fl_now_mono_ms();
    assert_true(peer_closed(c, 3000)); /* no bytes: a close without a response */
    int64_t took = fl_now_mono_ms() - start;
    assert_true(took >= 300 && took < 1500);
    client_close(c);

    /* a connection that never sends anything is closed too (header timeout) */
    c = client_open();
    assert_true(peer_closed(c, 3000));
    client_close(c);
}

/* The client does not read an 8 MiB answer: the connection is closed at the write timeout. */
static void client_not_reading_is_cut_off_at_the_write_timeout(void **state)
{
    (void)state;
    client_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = connect_fd(W.port, 4096);
    assert_true(c->fd >= 0);
    send_str(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_connections(1, 1000);
    assert_int_equal(fl_http_server_connections(W.srv), 1);
    wait_connections(0, 3000);
    assert_int_equal(fl_http_server_connections(W.srv), 0);
    assert_int_equal(atomic_load(&released), 1); /* the borrowed body was given back */
    client_close(c);
}

static void handler_that_never_answers_is_logged(void **state)
{
    (void)state;
    client_t *c = client_open();
    send_str(c, "GET /never HTTP/1.1\r\nHost: t\r\nX-Request-Id: lost-1\r\n\r\n");
    sleep_ms(700);
    char log[16384];
    read_log(log, sizeof(log));
    assert_non_null(strstr(log, "\"event\":\"http.handler_pending\""));
    assert_non_null(strstr(log, "\"request_id\":\"lost-1\""));
    /* no timeout answers for it: the handler owns the request */
    assert_int_equal(c->len, 0);
    assert_false(peer_closed(c, 100));
    client_close(c);
}

static void post_without_length_is_411(void **state)
{
    (void)state;
    resp_t r;
    request_once("POST /echo HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_error(&r, 411, "length_required");
}

/* 413 arrives before any body byte is sent. */
static void content_length_over_the_limit_is_413_at_once(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_error(&r, 413, "payload_too_large");
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_true(peer_closed(c, 3000));
    client_close(c);

    /* exactly at the limit is fine */
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n");
    memset(req + n, 'x', 1024);
    req[n + 1024] = '\0';
    request_once(req, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 1024);
}

static void chunked_body_over_the_limit_is_413(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[700];
    memset(chunk, 'y', sizeof(chunk));
    for (int i = 0; i < 2; i++) {
        send_str(c, "2bc\r\n"); /* 700 */
        send_bytes(c, chunk, sizeof(chunk));
        send_str(c, "\r\n");
    }
    assert_true(read_response(c, &r, false));
    assert_error(&r, 413, "payload_too_large");
    assert_true(peer_closed(c, 3000));
    client_close(c);
}

static void bodies_must_be_json_else_415(void **state)
{
    (void)state;
    resp_t r;
    request_once("POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}", &r);
    assert_error(&r, 415, "unsupported_media_type");
    request_once("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", &r); /* no Content-Type */
    assert_error(&r, 415, "unsupported_media_type");
    request_once("POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: application/json; charset=latin1\r\nContent-Length: 2\r\n\r\n{}",
                 &r);
    assert_error(&r, 415, "unsupported_media_type");
    request_once("POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: application/jsonx\r\nContent-Length: 2\r\n\r\n{}", &r);
    assert_error(&r, 415, "unsupported_media_type");
    /* checked before routing: an unknown path or a GET-only route with a text body */
    request_once("POST /no/such/path HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", &r);
    assert_error(&r, 415, "unsupported_media_type");
    request_once("POST /sync HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", &r);
    assert_error(&r, 415, "unsupported_media_type");

    /* and before the body is read: the answer comes with only the head sent, then the close */
    client_t *c = client_open();
    send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_error(&r, 415, "unsupported_media_type");
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_true(peer_closed(c, 3000));
    client_close(c);

    /* JSON passes, whatever the case and parameters */
    request_once("POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: Application/JSON;charset=UTF-8\r\nContent-Length: 2\r\n\r\n{}",
                 &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"ok\":true}");
    request_once(
        "POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: application/json; charset=\"utf-8\"\r\nContent-Length: 2\r\n\r\n{}", &r);
    assert_int_equal(r.status, 200);
    /* a JSON body to a route that does not take POST is 405, not 415 */
    request_once("POST /sync HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", &r);
    assert_error(&r, 405, "method_not_allowed");

    /* without a body only FL_ROUTE_JSON_BODY routes want the type */
    request_once("POST /json HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r);
    assert_error(&r, 415, "unsupported_media_type");
    request_once("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
}

static void header_bytes_over_the_limit_are_431(void **state)
{
    (void)state;
    char req[4096];
    char big[1100];
    memset(big, 'h', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    snprintf(req, sizeof(req), "GET /sync HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n", big);
    resp_t r;
    client_t *c = client_open();
    send_str(c, req);
    assert_true(read_response(c, &r, false));
    assert_error(&r, 431, "headers_too_large");
    assert_true(peer_closed(c, 3000));
    client_close(c);

    /* a long URL counts too */
    snprintf(req, sizeof(req), "GET /sync?%s HTTP/1.1\r\nHost: t\r\n\r\n", big);
    request_once(req, &r);
    assert_error(&r, 431, "headers_too_large");
}

static void too_many_headers_are_431(void **state)
{
    (void)state;
    char req[2048] = "GET /sync HTTP/1.1\r\n";
    for (int i = 0; i < 9; i++) {
        char line[32];
        snprintf(line, sizeof(line), "X-H%d: v\r\n", i);
        strcat(req, line);
    }
    strcat(req, "\r\n");
    resp_t r;
    request_once(req, &r);
    assert_error(&r, 431, "headers_too_large");

    /* 8 is fine */
    request_once("GET /sync HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
}

static void out_of_memory_on_a_request_is_503(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);

    /* the body buffer is the next allocation this connection makes */
    fl_alloc_fail_after(0);
    send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello");
    assert_true(read_response(c, &r, false));
    fl_alloc_fail_after(-1);
    assert_error(&r, 503, "unavailable");
    assert_string_equal(find_header(&r, "Retry-After"), "1");
    client_close(c);

    /* path parameters bigger than the arena's first block need an allocation */
    c = client_open();
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    char req[2048], p[700];
    memset(p, 'p', sizeof(p) - 1);
    p[sizeof(p) - 1] = '\0';
    snprintf(req, sizeof(req), "GET /fleets/%s/vehicles/v HTTP/1.1\r\nHost: t\r\n\r\n", p);
    fl_alloc_fail_after(0);
    send_str(c, req);
    assert_true(read_response(c, &r, false));
    fl_alloc_fail_after(-1);
    assert_error(&r, 503, "unavailable");
    /* the connection survives a 503 on a complete request */
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    client_close(c);

    /* a new connection whose memory cannot be had gets the canned 503 */
    fl_alloc_fail_after(0);
    c = client_open();
    assert_true(read_response(c, &r, false));
    fl_alloc_fail_after(-1);
    assert_error(&r, 503, "unavailable");
    assert_string_equal(find_header(&r, "Retry-After"), "1");
    assert_true(peer_closed(c, 3000));
    client_close(c);
    wait_connections(0, 1000);
    assert_int_equal(fl_http_server_connections(W.srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(header_deadline_cuts_a_trickling_client_off_with_408, setup_short_timeouts, stop_server),
        cmocka_unit_test_setup_teardown(body_deadline_is_408, setup_short_timeouts, stop_server),
        cmocka_unit_test_setup_teardown(idle_keep_alive_connection_is_closed_silently, setup_short_timeouts, stop_server),
        cmocka_unit_test_setup_teardown(client_not_reading_is_cut_off_at_the_write_timeout, setup_short_timeouts, stop_server),
        cmocka_unit_test_setup_teardown(handler_that_never_answers_is_logged, setup_logged_short_timeouts, stop_server),
        cmocka_unit_test_setup_teardown(post_without_length_is_411, setup_default, stop_server),
        cmocka_unit_test_setup_teardown(content_length_over_the_limit_is_413_at_once, setup_small_limits, stop_server),
        cmocka_unit_test_setup_teardown(chunked_body_over_the_limit_is_413, setup_small_limits, stop_server),
        cmocka_unit_test_setup_teardown(bodies_must_be_json_else_415, setup_default, stop_server),
        cmocka_unit_test_setup_teardown(header_bytes_over_the_limit_are_431, setup_small_limits, stop_server),
        cmocka_unit_test_setup_teardown(too_many_headers_are_431, setup_small_limits, stop_server),
        cmocka_unit_test_setup_teardown(out_of_memory_on_a_request_is_503, setup_default, stop_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

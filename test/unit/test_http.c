/* lib/http protocol behaviour over real sockets: keep-alive, pipelining (sync and async) in order,
 * chunked bodies, HEAD, routing and parameters, request ids, errors as the contract's JSON,
 * 100-continue, the protocol switch and the access log. */
#include "test_http_support.h"

static int setup(void **state)
{
    (void)state;
    return start_server(NULL);
}

static void keep_alive_serves_many_requests_on_one_connection(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    for (int i = 0; i < 3; i++) {
        send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_true(read_response(c, &r, false));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "sync");
        assert_null(find_header(&r, "Connection"));
        assert_string_equal(find_header(&r, "Content-Length"), "4");
        assert_string_equal(find_header(&r, "Content-Type"), "text/plain");
        assert_string_equal(find_header(&r, "Server"), "fleetd");
        assert_non_null(find_header(&r, "Date"));
    }
    assert_false(peer_closed(c, 100));
    client_close(c);
}

static void connection_close_is_honoured(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "sync");
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_true(peer_closed(c, 2000));
    client_close(c);
}

static void http10_closes_unless_keep_alive_is_asked(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(c, "GET /sync HTTP/1.0\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "sync");
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_true(peer_closed(c, 2000));
    client_close(c);

    c = client_open();
    for (int i = 0; i < 2; i++) {
        send_str(c, "GET /sync HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_true(read_response(c, &r, false));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "sync");
        assert_string_equal(find_header(&r, "Connection"), "keep-alive");
    }
    client_close(c);
}

static void pipelined_requests_are_answered_in_order(void **state)
{
    (void)state;
    client_t *c = client_open();
    char all[4096] = "";
    for (int i = 0; i < 10; i++) {
        char one[128];
        snprintf(one, sizeof(one), "GET /sync?n=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        strcat(all, one);
    }
    send_str(c, all); /* one write: 10 requests */
    for (int i = 0; i < 10; i++) {
        resp_t r;
        char want[32];
        assert_true(read_response(c, &r, false));
        assert_int_equal(r.status, 200);
        snprintf(want, sizeof(want), "sync n=%d", i);
        assert_string_equal(r.body, want);
    }
    client_close(c);
}

static void pipelined_async_requests_keep_their_order(void **state)
{
    (void)state;
    client_t *c = client_open();
    char all[4096] = "";
    for (int i = 0; i < 10; i++) {
        char one[128];
        /* Earlier async requests take longer: without ordering, later answers would overtake. */
        if (i % 2 == 0)
            snprintf(one, sizeof(one), "GET /async?n=%d&ms=%d HTTP/1.1\r\nHost: t\r\n\r\n", i, 60 - i * 5);
        else
            snprintf(one, sizeof(one), "GET /sync?n=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        strcat(all, one);
    }
    send_str(c, all);
    for (int i = 0; i < 10; i++) {
        resp_t r;
        char want[32];
        assert_true(read_response(c, &r, false));
        assert_int_equal(r.status, 200);
        snprintf(want, sizeof(want), "%s n=%d", i % 2 == 0 ? "async" : "sync", i);
        assert_string_equal(r.body, want);
    }
    client_close(c);
}

typedef struct {
    client_t *c;
    const char *data;
    size_t len;
} writer_t;

static void *write_all(void *arg)
{
    writer_t *w = arg;
    send_bytes(w->c, w->data, w->len);
    return NULL;
}

/* Far more than the input buffer and the output high-water mark: the server must stop reading
 * and writing in turn without losing or reordering anything. */
static void thousands_of_pipelined_requests_stay_in_order(void **state)
{
    (void)state;
    enum { N = 3000 };
    client_t *c = client_open();
    char *all = malloc((size_t)N * 64);
    assert_non_null(all);
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(all + len,
                               i % 100 == 7 ? "GET /async?n=%d&ms=1 HTTP/1.1\r\n\r\n" : "GET /sync?n=%d HTTP/1.1\r\n\r\n", i);
    writer_t w = {.c = c, .data = all, .len = len};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, write_all, &w), 0);
    for (int i = 0; i < N; i++) {
        resp_t r;
        char want[32];
        assert_true(read_response(c, &r, false));
        assert_int_equal(r.status, 200);
        snprintf(want, sizeof(want), "%s n=%d", i % 100 == 7 ? "async" : "sync", i);
        assert_string_equal(r.body, want);
    }
    pthread_join(t, NULL);
    free(all);
    client_close(c);
}

/* Regression: parsing stops while much output waits; once the output is written, the requests
 * still buffered must be served even though the client sends nothing more. */
static void buffered_requests_resume_after_big_responses_drain(void **state)
{
    (void)state;
    client_t *c = client_open();
    send_str(c, "GET /blob?kb=200 HTTP/1.1\r\n\r\nGET /blob?kb=200 HTTP/1.1\r\n\r\nGET /blob?kb=200 HTTP/1.1\r\n\r\n"
                "GET /sync?n=4 HTTP/1.1\r\n\r\n");
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        char *end;
        while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
            assert_true(fill(c));
        assert_true(strncmp(c->buf, "HTTP/1.1 200 ", 13) == 0);
        size_t skip = (size_t)(end - c->buf) + 4, body = 200 * 1024;
        while (body > 0) { /* the body is bigger than the client's buffer: count it through */
            if (c->len <= skip) {
                c->len = skip = 0;
                assert_true(fill(c));
                continue;
            }
            size_t take = c->len - skip < body ? c->len - skip : body;
            body -= take;
            total += take;
            memmove(c->buf, c->buf + skip + take, c->len - skip - take);
            c->len -= skip + take;
            skip = 0;
        }
    }
    assert_int_equal(total, 3 * 200 * 1024);
    resp_t r;
    assert_true(read_response(c, &r, false));
    assert_string_equal(r.body, "sync n=4");
    client_close(c);
}

static void chunked_body_is_decoded(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    /* and the connection goes on */
    send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\nabc");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abc");
    client_close(c);
}

static void head_gets_headers_without_body(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(c, "HEAD /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, true));
    assert_int_equal(r.status, 200);
    assert_string_equal(find_header(&r, "Content-Length"), "4");
    /* No body bytes came: the next response starts right away. */
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "sync");
    client_close(c);
}

static void request_id_is_echoed_or_generated(void **state)
{
    (void)state;
    resp_t r;
    request_once("GET /id HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123.x:y_z\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abc-123.x:y_z");
    assert_string_equal(find_header(&r, "X-Request-Id"), "abc-123.x:y_z");

    char first[64];
    request_once("GET /id HTTP/1.1\r\nHost: t\r\nX-Request-Id: not valid!\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(strlen(r.body), 16);
    assert_int_equal(strspn(r.body, "0123456789abcdef"), 16);
    assert_string_equal(find_header(&r, "X-Request-Id"), r.body);
    snprintf(first, sizeof(first), "%.16s", r.body);

    request_once("GET /id HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_int_equal(strlen(r.body), 16);
    assert_string_not_equal(r.body, first);

    char longid[200];
    memset(longid, 'a', 129);
    longid[129] = '\0';
    char req[400];
    snprintf(req, sizeof(req), "GET /id HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n\r\n", longid);
    request_once(req, &r);
    assert_int_equal(strlen(r.body), 16); /* 129 characters: too long, replaced */

    /* error answers carry the id too */
    request_once("GET /nope HTTP/1.1\r\nHost: t\r\nX-Request-Id: err-1\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(find_header(&r, "X-Request-Id"), "err-1");
}

static void path_parameters_and_query_are_decoded(void **state)
{
    (void)state;
    resp_t r;
    request_once("GET /fleets/harbor%2D1/vehicles/truck%2017?x=1&q=a%20b+c HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "fleet=harbor-1 vehicle=truck 17 q=a b c");

    request_once("GET /fleets/a/vehicles/b HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_string_equal(r.body, "fleet=a vehicle=b q=(none)");

    /* %00 would cut a C string short: it stays as sent */
    request_once("GET /fleets/a%00b/vehicles/c?q=%zz HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_string_equal(r.body, "fleet=a%00b vehicle=c q=%zz");

    /* a literal segment wins over a parameter */
    request_once("GET /fleets/all/status HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_string_equal(r.body, "literal");
    request_once("GET /fleets/harbor/status HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_string_equal(r.body, "param harbor");

    /* an empty segment matches no parameter; a trailing slash is another path */
    request_once("GET /fleets//status HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_error(&r, 404, "not_found");
    request_once("GET /sync/ HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_error(&r, 404, "not_found");

    /* absolute-form request target */
    request_once("GET http://example.com/sync?n=7 HTTP/1.1\r\nHost: example.com\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "sync n=7");
}

static void headers_are_case_insensitive_and_extra_headers_are_sent(void **state)
{
    (void)state;
    resp_t r;
    request_once("GET /headers HTTP/1.1\r\nHost: t\r\nX-TEST: hello\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "x-test=hello method=GET");
    assert_string_equal(find_header(&r, "X-Extra"), "yes");
    assert_null(find_header(&r, "Injected"));
}

static void unknown_path_is_404(void **state)
{
    (void)state;
    resp_t r;
    request_once("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_error(&r, 404, "not_found");
}

static void wrong_method_is_405_with_allow(void **state)
{
    (void)state;
    resp_t r;
    client_t *c = client_open();
    send_str(c, "DELETE /items HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_error(&r, 405, "method_not_allowed");
    assert_string_equal(find_header(&r, "Allow"), "GET, HEAD, POST");
    /* not a protocol error: the connection stays usable */
    send_str(c, "POST /items HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "items");
    client_close(c);

    request_once("TRACE /sync HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_error(&r, 405, "method_not_allowed");
    assert_string_equal(find_header(&r, "Allow"), "GET, HEAD");
}

static void handler_error_is_contract_json(void **state)
{
    (void)state;
    resp_t r;
    request_once("GET /error500 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_error(&r, 500, "internal_error");
    assert_string_equal(r.body, "{\"error\":{\"code\":\"internal_error\",\"message\":\"something \\\"broke\\\"\"}}");
}

static void malformed_request_is_400_and_closes(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    /* bytes after the error must not be served */
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\nBad Header Line\r\n\r\nGET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_error(&r, 400, "bad_request");
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_true(peer_closed(c, 3000));
    client_close(c);

    request_once("\x01GARBAGE\r\n\r\n", &r);
    assert_error(&r, 400, "bad_request");
    /* Content-Length with chunked is request smuggling material: refused */
    request_once("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &r);
    assert_error(&r, 400, "bad_request");
    request_once("GET /sync HTTP/2.0\r\nHost: t\r\n\r\n", &r);
    assert_error(&r, 505, "http_version_not_supported");
}

static void borrowed_body_is_released_once_sent(void **state)
{
    (void)state;
    resp_t r;
    client_t *c = client_open();
    for (int i = 0; i < 3; i++) {
        send_str(c, "GET /ref HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_true(read_response(c, &r, false));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "{\"status\":\"ok\"}");
    }
    send_str(c, "HEAD /ref HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, true));
    assert_string_equal(find_header(&r, "Content-Length"), "15");
    assert_int_equal(atomic_load(&released), 4);
    client_close(c);
}

static void peer_is_reported(void **state)
{
    (void)state;
    resp_t r;
    request_once("GET /peer HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_true(strncmp(r.body, "127.0.0.1:", 10) == 0);
    assert_non_null(strstr(r.body, " loopback"));
}

static void expect_100_continue_is_answered_before_the_body(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    send_str(
        c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    char want[] = "HTTP/1.1 100 Continue\r\n\r\n";
    while (c->len < sizeof(want) - 1)
        assert_true(fill(c));
    assert_memory_equal(c->buf, want, sizeof(want) - 1);
    memmove(c->buf, c->buf + sizeof(want) - 1, c->len - (sizeof(want) - 1));
    c->len -= sizeof(want) - 1;
    send_str(c, "hello");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    client_close(c);

    request_once("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5\r\nExpect: teapot\r\n\r\n",
                 &r);
    assert_error(&r, 417, "expectation_failed");
}

static void upgrade_hands_the_socket_over_with_leftover_bytes(void **state)
{
    (void)state;
    client_t *c = client_open();
    resp_t r;
    /* the client speaks the new protocol right after the request, in the same write */
    send_str(c, "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 101);
    assert_string_equal(find_header(&r, "Upgrade"), "echo");
    while (c->len < 7)
        assert_true(fill(c));
    assert_memory_equal(c->buf, "L:hello", 7);
    c->len = 0;
    send_str(c, "world");
    while (c->len < 5)
        assert_true(fill(c));
    assert_memory_equal(c->buf, "world", 5);
    c->len = 0;
    assert_int_equal(fl_http_server_connections(W.srv), 1); /* still counted while upgraded */
    client_close(c);
    wait_connections(0, 2000);
    assert_int_equal(fl_http_server_connections(W.srv), 0);

    /* without the upgrade headers the handler answers normally */
    request_once("GET /ws HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_error(&r, 426, "upgrade_required");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(keep_alive_serves_many_requests_on_one_connection, setup, stop_server),
        cmocka_unit_test_setup_teardown(connection_close_is_honoured, setup, stop_server),
        cmocka_unit_test_setup_teardown(http10_closes_unless_keep_alive_is_asked, setup, stop_server),
        cmocka_unit_test_setup_teardown(pipelined_requests_are_answered_in_order, setup, stop_server),
        cmocka_unit_test_setup_teardown(pipelined_async_requests_keep_their_order, setup, stop_server),
        cmocka_unit_test_setup_teardown(thousands_of_pipelined_requests_stay_in_order, setup, stop_server),
        cmocka_unit_test_setup_teardown(buffered_requests_resume_after_big_responses_drain, setup, stop_server),
        cmocka_unit_test_setup_teardown(chunked_body_is_decoded, setup, stop_server),
        cmocka_unit_test_setup_teardown(head_gets_headers_without_body, setup, stop_server),
        cmocka_unit_test_setup_teardown(request_id_is_echoed_or_generated, setup, stop_server),
        cmocka_unit_test_setup_teardown(path_parameters_and_query_are_decoded, setup, stop_server),
        cmocka_unit_test_setup_teardown(headers_are_case_insensitive_and_extra_headers_are_sent, setup, stop_server),
        cmocka_unit_test_setup_teardown(unknown_path_is_404, setup, stop_server),
        cmocka_unit_test_setup_teardown(wrong_method_is_405_with_allow, setup, stop_server),
        cmocka_unit_test_setup_teardown(handler_error_is_contract_json, setup, stop_server),
        cmocka_unit_test_setup_teardown(malformed_request_is_400_and_closes, setup, stop_server),
        cmocka_unit_test_setup_teardown(borrowed_body_is_released_once_sent, setup, stop_server),
        cmocka_unit_test_setup_teardown(peer_is_reported, setup, stop_server),
        cmocka_unit_test_setup_teardown(expect_100_continue_is_answered_before_the_body, setup, stop_server),
        cmocka_unit_test_setup_teardown(upgrade_hands_the_socket_over_with_leftover_bytes, setup, stop_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

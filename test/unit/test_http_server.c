/* lib/http server-level behaviour: the connection limit (503 at accept), graceful drain, accept
 * pausing when descriptors run out, listen addresses and errors, router patterns, access log. */
#include "test_http_support.h"

#include <sys/resource.h>

static void two_connections(fl_config_t *cfg)
{
    cfg->max_connections = 2;
}

static int setup_default(void **state)
{
    (void)state;
    return start_server(NULL);
}

static int setup_two_connections(void **state)
{
    (void)state;
    return start_server(two_connections);
}

static void with_access_log(fl_config_t *cfg)
{
    cfg->access_log = true;
}

static int setup_access_log(void **state)
{
    (void)state;
    return start_server(with_access_log);
}

static void past_max_connections_a_client_gets_503_and_close(void **state)
{
    (void)state;
    client_t *a = client_open(), *b = client_open();
    resp_t r;
    send_str(a, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(a, &r, false));
    send_str(b, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(b, &r, false));
    assert_int_equal(fl_http_server_connections(W.srv), 2);

    client_t *c = client_open(); /* accepted, answered, closed: never left hanging */
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_error(&r, 503, "unavailable");
    assert_string_equal(find_header(&r, "Retry-After"), "1");
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_true(peer_closed(c, 2000));
    client_close(c);
    assert_int_equal(fl_http_server_connections(W.srv), 2);

    client_close(a);
    wait_connections(1, 2000);
    c = client_open();
    send_str(c, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    client_close(c);
    client_close(b);
}

static void drain_closes_idle_answers_in_flight_and_stops_accepting(void **state)
{
    (void)state;
    client_t *idle = client_open(), *busy = client_open();
    resp_t r;
    send_str(idle, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(idle, &r, false));
    send_str(busy, "GET /async?n=1&ms=300 HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(50); /* the request is in the handler's hands */

    fl_http_server_drain(W.srv);
    assert_true(peer_closed(idle, 1000));
    assert_true(read_response(busy, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "async n=1");
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_true(peer_closed(busy, 1000));
    client_close(idle);
    client_close(busy);
    wait_connections(0, 1000);
    assert_int_equal(fl_http_server_connections(W.srv), 0);

    int fd = connect_fd(W.port, 0);
    assert_int_equal(fd, -1);    /* listening sockets are closed */
    fl_http_server_drain(W.srv); /* twice is harmless */
}

static void pause_stops_accepting_until_resume(void **state)
{
    (void)state;
    client_t *open_before = client_open();
    resp_t r;
    send_str(open_before, "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_response(open_before, &r, false));

    fl_http_server_pause(W.srv);
    sleep_ms(100);                     /* the shards apply it on their loops */
    client_t *waiting = client_open(); /* the kernel completes the handshake: it waits in the backlog */
    send_str(waiting, "GET /sync?n=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    struct pollfd p = {.fd = waiting->fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 300), 0); /* not answered while paused */
    assert_int_equal(fl_http_server_connections(W.srv), 1);
    send_str(open_before, "GET /sync?n=1 HTTP/1.1\r\nHost: t\r\n\r\n"); /* open connections carry on */
    assert_true(read_response(open_before, &r, false));
    assert_string_equal(r.body, "sync n=1");

    fl_http_server_resume(W.srv);
    assert_true(read_response(waiting, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "sync n=2");
    client_close(waiting);
    client_close(open_before);
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* With no descriptor left, accept fails with EMFILE while the listening socket stays readable:
 * the server must pause accepting rather than spin, and resume when descriptors are back. */
static void out_of_descriptors_pauses_accepting_without_spinning(void **state)
{
    (void)state;
    /* valgrind keeps descriptors of its own under a virtual limit: the test cannot hold there */
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload"))
        skip();
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(cfd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = dup(0); /* the lowest free descriptor: with the limit there, none can be made */
    assert_true(probe >= 0);
    close(probe);
    struct rlimit low = {.rlim_cur = (rlim_t)probe, .rlim_max = old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)W.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)), 0); /* queued in the backlog */
    double cpu0 = cpu_seconds();
    sleep_ms(500);
    double cpu = cpu_seconds() - cpu0;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_true(cpu < 0.2); /* a spinning accept loop would burn ~0.5 s of CPU here */

    const char req[] = "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_int_equal(send(cfd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(req) - 1));
    client_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = cfd;
    resp_t r;
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "sync");
    client_close(c);
}

static void access_log_has_one_line_per_request(void **state)
{
    (void)state;
    resp_t r;
    request_once("GET /sync?n=1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: log-me\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    request_once("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    char log[8192];
    read_log(log, sizeof(log));
    char *line = strstr(log, "\"request_id\":\"log-me\"");
    assert_non_null(line);
    char *start = line;
    while (start > log && start[-1] != '\n')
        start--;
    char *end = strchr(line, '\n');
    assert_non_null(end);
    *end = '\0';
    assert_non_null(strstr(start, "\"event\":\"http.access\""));
    assert_non_null(strstr(start, "\"method\":\"GET\""));
    assert_non_null(strstr(start, "\"path\":\"/sync\""));
    assert_non_null(strstr(start, "\"status\":200"));
    assert_non_null(strstr(start, "\"bytes\":8"));
    assert_non_null(strstr(start, "\"duration_ms\":"));
    assert_non_null(strstr(start, "\"peer\":\"127.0.0.1:"));
    assert_non_null(strstr(end + 1, "\"status\":404"));
}

static void noop(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond(req, 204, NULL, NULL, 0);
}

static void router_rejects_bad_patterns(void **state)
{
    (void)state;
    fl_http_router_t *r = fl_http_router_new();
    assert_non_null(r);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/", noop, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/a/{id}/b", noop, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_POST, "/a/{other}/b", noop, NULL, 0), FL_OK); /* another method */
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/a/{id}/b", noop, NULL, 0), FL_EINVAL); /* routed already */
    const char *bad[] = {"", "a", "//", "/a/", "/a//b", "/{}", "/{a-b}", "/{a}/{a}", "/x{a}", "/a b", "/a?b", "/{a"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, bad[i], noop, NULL, 0), FL_EINVAL);
    assert_int_equal(fl_http_router_add(r, 0, "/m", noop, NULL, 0), FL_EINVAL);
    assert_int_equal(fl_http_router_add(r, 128, "/m", noop, NULL, 0), FL_EINVAL);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/m", NULL, NULL, 0), FL_EINVAL);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/m", noop, NULL, 99), FL_EINVAL);
    fl_http_router_free(r);
}

static void listen_rejects_bad_addresses_and_reports_bind_errors(void **state)
{
    (void)state;
    fl_http_server_t *srv;
    char bound[64];
    assert_int_equal(fl_http_server_new(&W.cfg, W.router, &srv), FL_OK);
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "::1:80", "[::1]80", "host:port"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(fl_http_server_listen(srv, W.rt, bad[i], bound, sizeof(bound)), FL_EINVAL);
    /* a port held by a socket without SO_REUSEPORT */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));
    assert_int_equal(fl_http_server_listen(srv, W.rt, addr, bound, sizeof(bound)), FL_EIO);
    close(fd);
    fl_http_server_free(srv);
}

static void listens_on_ipv6_loopback(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&sa6, sizeof(sa6)) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_v6)
        skip();
    fl_runtime_t *rt;
    fl_http_server_t *srv;
    char bound[64];
    assert_int_equal(fl_runtime_new(2, &rt), FL_OK);
    assert_int_equal(fl_http_server_new(&W.cfg, W.router, &srv), FL_OK);
    assert_int_equal(fl_http_server_listen(srv, rt, "[::1]:0", bound, sizeof(bound)), FL_OK);
    assert_true(strncmp(bound, "[::1]:", 6) == 0);
    assert_int_equal(fl_http_server_listen(srv, rt, "[::1]:0", bound, sizeof(bound)), FL_ESTATE);
    assert_int_equal(fl_runtime_start(rt), FL_OK);

    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    sa6.sin6_port = htons((uint16_t)atoi(strrchr(bound, ':') + 1));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa6, sizeof(sa6)), 0);
    client_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = fd;
    send_str(c, "GET /peer HTTP/1.1\r\nHost: t\r\n\r\n");
    resp_t r;
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_true(strncmp(r.body, "[::1]:", 6) == 0);
    assert_non_null(strstr(r.body, " loopback"));
    client_close(c);
    fl_runtime_stop(rt);
    fl_http_server_free(srv);
    fl_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(past_max_connections_a_client_gets_503_and_close, setup_two_connections, stop_server),
        cmocka_unit_test_setup_teardown(drain_closes_idle_answers_in_flight_and_stops_accepting, setup_default, stop_server),
        cmocka_unit_test_setup_teardown(pause_stops_accepting_until_resume, setup_default, stop_server),
        cmocka_unit_test_setup_teardown(out_of_descriptors_pauses_accepting_without_spinning, setup_default, stop_server),
        cmocka_unit_test_setup_teardown(access_log_has_one_line_per_request, setup_access_log, stop_server),
        cmocka_unit_test_setup_teardown(router_rejects_bad_patterns, setup_default, stop_server),
        cmocka_unit_test_setup_teardown(listen_rejects_bad_addresses_and_reports_bind_errors, setup_default, stop_server),
        cmocka_unit_test_setup_teardown(listens_on_ipv6_loopback, setup_default, stop_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* A small blocking HTTP/1.1 client for the commands that talk to a running daemon (fleetd tree,
 * fleetd demo): one request per connection, plain HTTP, responses parsed by http_parser. */
#ifndef FLEETD_CLI_HTTP_H
#define FLEETD_CLI_HTTP_H

#include "core/core.h"

typedef struct {
    int status;
    int retry_after_s; /* Retry-After in seconds, or -1 when absent or not a number */
    char *body;        /* NUL-terminated; fl_free (cli_http_response_free) */
    size_t body_len;
} cli_http_response_t;

/* Splits "http://host:port[/...]" or "host:port" (IPv6 in brackets) into host and port: FL_OK or
 * FL_EINVAL. */
int cli_http_split_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen);

/* Sends method path to the daemon at url with Connection: close, plus headers (complete header
 * lines, each ending in CRLF; may be NULL) and body (Content-Length is added), and reads the whole
 * response, within timeout_ms for each step. Returns FL_OK with res filled (free it), or:
 * FL_EINVAL url is not an address; FL_EUNAVAIL nothing accepts connections there (the daemon is not
 * up); FL_EIO sending or receiving failed or timed out (also when a signal interrupts); FL_EPROTO
 * the answer is not HTTP or over 64 MiB; FL_ENOMEM. err gets one line saying why. */
int cli_http_request(const char *url, const char *method, const char *path, const char *headers, const void *body, size_t body_len,
                     int timeout_ms, cli_http_response_t *res, char *err, size_t errlen);
void cli_http_response_free(cli_http_response_t *res);

#endif

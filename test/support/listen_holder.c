/*
 * listen_holder: does for the hand-over test what systemd does for fleetd.socket. It binds a
 * listening socket on 127.0.0.1 (a free port), prints "port N" on stdout, then reads commands on
 * stdin, one per line:
 *   spawn    starts the command given after "--" with the socket as fd 3 and LISTEN_FDS=1,
 *            LISTEN_PID=its pid (socket activation); prints "pid N"
 *   quit     exits (children are the caller's to stop)
 * Children share the holder's stderr. Usage: listen_holder -- /path/to/fleetd serve
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t spawn(int lfd, char **argv)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (dup2(lfd, 3) < 0)
        _exit(127);
    if (lfd != 3)
        close(lfd);
    char pidbuf[32];
    snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", pidbuf, 1);
    unsetenv("LISTEN_FDNAMES");
    execv(argv[0], argv);
    perror("listen_holder: exec");
    _exit(127);
}

int main(int argc, char **argv)
{
    int cmd = 1;
    while (cmd < argc && strcmp(argv[cmd], "--") != 0)
        cmd++;
    if (cmd + 1 >= argc) {
        fprintf(stderr, "usage: listen_holder -- COMMAND [ARGS...]\n");
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0); /* no CLOEXEC: it goes to the children as fd 3 */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sl) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("listen_holder");
        return 1;
    }
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof(line), stdin)) {
        if (strncmp(line, "spawn", 5) == 0) {
            pid_t pid = spawn(lfd, argv + cmd + 1);
            printf("pid %d\n", (int)pid);
            fflush(stdout);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        }
        while (waitpid(-1, NULL, WNOHANG) > 0) /* reap children that exited */
            ;
    }
    return 0;
}

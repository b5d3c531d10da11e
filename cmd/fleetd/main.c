/* fleetd: the Harbor Fleet tracking daemon and its administration commands, in one binary. */
#include "commands.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static const command_t *const commands[] = {&cmd_serve, &cmd_migrate, &cmd_fleet,  &cmd_partner, &cmd_token,
                                            &cmd_tree,  &cmd_jobs,    &cmd_config, &cmd_demo,    NULL};

static void print_help(FILE *f)
{
    fprintf(f,
            "fleetd %s: the Harbor Fleet real-time vehicle-tracking daemon\n\n"
            "Usage: fleetd [COMMAND] [OPTIONS]\n\n"
            "Commands:\n",
            FLEETD_VERSION);
    for (const command_t *const *c = commands; *c; c++)
        fprintf(f, "  %-10s %s\n", (*c)->name, (*c)->summary);
    fprintf(f, "\nWith no command, fleetd serves. `fleetd COMMAND --help` describes one command.\n"
               "Settings come from the environment (DATABASE_URL, FLEETD_LISTEN, ...) or the file in\n"
               "FLEETD_CONFIG; `fleetd config` lists them all with their values.\n\n"
               "Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.\n");
}

static void vprint_error(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static void vprint_error(const char *fmt, va_list ap)
{
    fputs("fleetd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_error(fmt, ap);
    va_end(ap);
    return EXIT_USAGE;
}

int runtime_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_error(fmt, ap);
    va_end(ap);
    return EXIT_RUNTIME;
}

int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    return 0;
}

/* Many sockets per process is normal for a server: lift the soft descriptor limit to the hard one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    const command_t *cmd = &cmd_serve;
    int first = 1;
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)) {
        print_help(stdout);
        return EXIT_OK;
    }
    if (argc > 1 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
        printf("fleetd %s\n", FLEETD_VERSION);
        return EXIT_OK;
    }
    if (argc > 1 && argv[1][0] != '-') {
        cmd = NULL;
        for (const command_t *const *c = commands; *c; c++)
            if (strcmp((*c)->name, argv[1]) == 0)
                cmd = *c;
        if (cmd == NULL) {
            print_help(stderr);
            return usage_error("unknown command \"%s\"", argv[1]);
        }
        first = 2;
    }
    if (wants_help(argc - first + 1, argv + first - 1)) {
        fputs(cmd->usage, stdout);
        return EXIT_OK;
    }

    fl_config_t cfg;
    char err[512];
    if (fl_config_load(&cfg, err, sizeof(err)) != FL_OK) {
        fl_config_free(&cfg);
        return usage_error("%s", err);
    }
    fl_log_init((fl_log_level_t)cfg.log_level, (fl_log_format_t)cfg.log_format);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    /* argv[0] of the command is its name, so commands parse argv + 1 onwards alike. */
    int rc = cmd->run(cmd, &cfg, argc - first + 1, argv + first - 1);
    fl_config_free(&cfg);
    return rc;
}

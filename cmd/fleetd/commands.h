/* The subcommands of the fleetd binary. Each returns the process exit status:
 * 0 success, 1 runtime failure, 2 usage or configuration error (CONTRACT.md). */
#ifndef FLEETD_COMMANDS_H
#define FLEETD_COMMANDS_H

#include "core/core.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

typedef struct command {
    const char *name;
    const char *summary; /* one line for `fleetd --help` */
    const char *usage;   /* the whole text of `fleetd NAME --help` */
    int (*run)(const struct command *cmd, fl_config_t *cfg, int argc, char **argv);
} command_t;

/* Prints "fleetd: " + message + newline on stderr and returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "fleetd: " + message + newline on stderr and returns EXIT_RUNTIME. */
int runtime_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* True when argv[i] is -h or --help for any i >= 1. */
int wants_help(int argc, char **argv);

extern const command_t cmd_serve;
extern const command_t cmd_migrate;
extern const command_t cmd_config;
extern const command_t cmd_tree;
extern const command_t cmd_jobs;
extern const command_t cmd_token;
extern const command_t cmd_fleet;
extern const command_t cmd_partner;
extern const command_t cmd_demo;

#endif

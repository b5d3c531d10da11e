/* fleetd config: the settings in effect, or the table as Markdown (docs/configuration.md). */
#include "commands.h"

#include <stdio.h>
#include <string.h>

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    if (argc == 2 && strcmp(argv[1], "--markdown") == 0) {
        fl_config_markdown(stdout);
        return EXIT_OK;
    }
    if (argc != 1)
        return usage_error("config: unexpected argument \"%s\" (see fleetd config --help)", argv[1]);
    for (const fl_setting_t *s = fl_settings(); s->name; s++) {
        char value[1024];
        fl_config_format(cfg, s, value, sizeof(value));
        printf("%s=%s\n", s->name, value);
    }
    return EXIT_OK;
}

const command_t cmd_config = {
    .name = "config",
    .summary = "print the settings in effect (secrets hidden)",
    .usage = "Usage: fleetd config [--markdown]\n\n"
             "Prints every setting as NAME=VALUE with the value in effect after the defaults, the file\n"
             "in FLEETD_CONFIG and the environment; secrets print as (set).\n\n"
             "  --markdown   print the settings table as Markdown (the source of docs/configuration.md)\n",
    .run = run,
};

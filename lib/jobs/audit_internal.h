/* Shared by the audit trail's files (audit.c, retention.c). */
#ifndef FL_AUDIT_INTERNAL_H
#define FL_AUDIT_INTERNAL_H

#include "jobs.h"

#define FL_RETENTION_QUEUE "retention"
#define FL_RETENTION_KIND  "retention"

/* The retention worker, its queue and its cron entry (retention.c). */
int fl_retention_register(fl_jobs_t *jobs, int retention_s, int every_s);

#endif

#include "core.h"

const char *fl_strerror(int status)
{
    switch (status) {
    case FL_OK:
        return "ok";
    case FL_ENOMEM:
        return "out of memory";
    case FL_EINVAL:
        return "invalid argument";
    case FL_ERANGE:
        return "value out of range";
    case FL_EIO:
        return "input/output error";
    case FL_ETIMEDOUT:
        return "timed out";
    case FL_EFULL:
        return "queue full";
    case FL_ENOTFOUND:
        return "not found";
    case FL_EUNAVAIL:
        return "service unavailable";
    case FL_ECLOSED:
        return "closed";
    case FL_EPROTO:
        return "protocol error";
    case FL_EEXIST:
        return "already exists";
    case FL_ESTATE:
        return "invalid state";
    default:
        return "unknown error";
    }
}

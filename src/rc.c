#include "rc.h"

const char *rc_strerror(int rc)
{
    switch (rc) {
    case RC_OK: return "ok";
    case RC_ENOMEM: return "out of memory";
    case RC_EPROTO: return "protocol error";
    case RC_EAUTH: return "authentication failed";
    case RC_ELIMIT: return "limit exceeded";
    case RC_ESTORE: return "database error";
    case RC_ENOTFOUND: return "not found";
    case RC_ECONFLICT: return "conflict";
    case RC_EINVAL: return "invalid argument";
    case RC_EIO: return "i/o error";
    case RC_EEXPIRED: return "expired";
    case RC_EFORBIDDEN: return "forbidden";
    case RC_EGONE: return "deleted";
    }
    return "unknown error";
}

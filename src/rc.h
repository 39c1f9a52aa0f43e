/* rc.h - return codes shared by every fallible rowcast function. */
#ifndef RC_RC_H
#define RC_RC_H

#define MUSTCHECK __attribute__((warn_unused_result))

/* Fallible functions return 0 on success or one of these (negative). */
enum rc_code {
    RC_OK = 0,
    RC_ENOMEM = -1,   /* allocation failed */
    RC_EPROTO = -2,   /* peer sent something that violates the protocol */
    RC_EAUTH = -3,    /* authentication failed (bad token, bad key) */
    RC_ELIMIT = -4,   /* a configured limit was exceeded */
    RC_ESTORE = -5,   /* the database failed */
    RC_ENOTFOUND = -6, /* the named row does not exist */
    RC_ECONFLICT = -7, /* the row already exists */
    RC_EINVAL = -8,   /* invalid argument or value */
    RC_EIO = -9,      /* operating-system I/O error */
    RC_EEXPIRED = -10, /* credential expired */
    RC_EFORBIDDEN = -11, /* authenticated but not allowed */
    RC_EGONE = -12,   /* the row was deleted (a tombstone remains) */
};

/* Human-readable name of an rc_code; never NULL. Any thread. */
const char *rc_strerror(int rc);

#endif

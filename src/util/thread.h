/* thread.h - names the calling thread (top -H, perf, gdb show it). */
#ifndef ROWCAST_UTIL_THREAD_H
#define ROWCAST_UTIL_THREAD_H

#include <sys/prctl.h>

/* Linux keeps 15 bytes of a thread name; longer names are cut. */
static inline void thread_name(const char *name)
{
    (void)prctl(PR_SET_NAME, name, 0, 0, 0);
}

#endif

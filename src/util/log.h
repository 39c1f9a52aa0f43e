/* log.h - one line per event on stderr: `ts=… level=… msg="…" key=value…`.
 * Any thread; each line is written with one write(2). The level is checked before
 * any formatting. Never pass a token or secret. */
#ifndef RC_LOG_H
#define RC_LOG_H

enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO = 1,
    LOG_WARN = 2,
    LOG_ERROR = 3,
};

extern int log_min_level;

/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int log_level_parse(const char *s);

/* Sends log lines (and anything else written to stderr) to path, appending; called
 * again (SIGHUP) it reopens the file, for log rotation. Returns 0 or -1 (errno set). */
int log_open_file(const char *path);

/* A client-controlled string made safe as a logfmt value: returned as is when it is
 * only [A-Za-z0-9_.:/@+-], else quoted with JSON-style escapes (\" \\ \n \r \t \u00XX; cut at 200
 * bytes), so it can neither break a line nor forge a key. The result lives in one of a
 * few per-thread buffers: use it in the log call at hand. */
const char *log_v(const char *s);

/* Writes one line: msg is quoted, fmt (may be NULL) appends `key=value` pairs. */
void log_write(int level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, ...)                                                                       \
    do {                                                                                       \
        if ((lvl) >= log_min_level)                                                            \
            log_write((lvl), __VA_ARGS__);                                                     \
    } while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

#endif

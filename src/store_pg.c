/* store_pg.c - the PostgreSQL store (libpq).
 *
 * One writer connection group-commits: the writer thread drains its queue and sends the
 * whole batch as one pipeline (libpq pipeline mode, one round trip): BEGIN, then each
 * request in its own savepoint, then COMMIT. A request that fails is rolled back to its
 * savepoint and the requests after it are sent again, so it affects no other. Every
 * request is one prepared statement (CTEs where it needs several steps), so no request
 * needs a round trip of its own. This file is the connections, the threads and the
 * round trips; the statements, their arguments and the rows they return are
 * store_pg_sql.c's (store_pg_int.h).
 *
 * Two reader connections, each with its own thread, share the read queue and pipeline
 * the queries they take from it: one statement and one sync point per request, so each
 * query is its own implicit transaction (one snapshot) and a failed one affects no other.
 *
 * Every connection reconnects with backoff when it drops. Requests in flight when it
 * drops complete with RC_ESTORE (a write's commit may or may not have happened: its
 * completion says RC_ESTORE in both cases). Requests queued while it is down wait for
 * the reconnect at most WAIT_CONNECT_MS, then complete with RC_ESTORE: never a hang.
 * STORE_PING does not wait: once a reconnect attempt has failed it completes with
 * RC_ESTORE at once, so a health check reports a database that is down right away.
 *
 * Seq numbers, room versions (and notification ids) are assigned by the database, by the
 * triggers of migrations/postgres, under the room's (user's) lock: plain SQL writes get
 * them too, and the triggers log every change of a room in room_changes. A batch first
 * locks its rooms and notification users in one global order, so that nodes never
 * deadlock on them. The writes of the message life call the functions of migration 0006,
 * which check what needs the message's row (author, owner, deleted) inside the write and
 * return the change it logged.
 *
 * The listeners get this store's own commits: after each commit, the room changes, the
 * notifications and the document operations it committed, grouped per table, in commit
 * order. Rows written by other nodes or by plain SQL reach subscribers through the
 * LISTEN/NOTIFY bus (bus_pg.c), which reads room changes by version; the NOTIFY wake-ups
 * come from the triggers. */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "migrations.h"
#include "store.h"
#include "store_pg_int.h"
#include "store_queue.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/xmalloc.h"

/* Reader connections (and threads). */
#define N_READERS 2
/* Read requests one reader pipelines at a time. */
#define READ_BATCH 64
/* How long one connection attempt may take. */
#define CONNECT_MS 5000
/* How long a queued request waits for a connection before it fails with RC_ESTORE. */
#define WAIT_CONNECT_MS 5000
/* Reconnect backoff: first delay, doubled per failure up to the cap. */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
/* Repeated connection failures are logged at most this often per connection. */
#define FAIL_LOG_MS 10000
/* pg_advisory_lock key that serializes migrations across nodes ("rowcast" in ASCII). */
#define MIGRATE_LOCK_KEY "32199642103180148"

/* One connection and the state of its reconnects. Used by one thread only. */
struct link {
    PGconn *conn;
    char name[16];       /* "writer", "reader1": logs and application_name */
    bool broken;         /* the connection failed during the current exchange */
    bool report;         /* its state is the rowcast_db_connected gauge (the writer) */
    int backoff_ms;      /* next reconnect delay; 0 while connected */
    int64_t fail_logged; /* when a connection failure was last logged */
    int64_t down_since;  /* when it was lost (0: up, or never connected) */
};

struct pg_store {
    struct store base;
    char *url;
    char *url_safe; /* the URL without its password, for messages */
    int batch_max;
    struct link w, r[N_READERS];
    struct store_queue wq, rq;
    pthread_t writer, readers[N_READERS];
    int readers_started;
    bool writer_started;
    store_change_listener listener;
    void *listener_arg;
    void (*notif_listener)(const struct store_notif *n, size_t count, void *arg);
    void (*docop_listener)(const struct store_docop *ops, size_t count, void *arg);
    store_session_listener session_listener;
    int announced; /* the writer session's pid last given to it (writer thread only) */
    struct store_req **batch; /* batch_max slots, writer thread only */
};

/* Completes a list of requests with rc. */
static void complete_all(struct store_req *head, int rc)
{
    while (head) {
        struct store_req *next = head->_next;
        head->_next = NULL;
        head->rc = rc;
        store_complete(head);
        head = next;
    }
}

/* ---- results -------------------------------------------------------------------------- */

/* True for a SQLSTATE that means the session is over (connection exception, shutdown). */
static bool fatal_sqlstate(const char *code)
{
    return !code || !strncmp(code, "08", 2) || !strcmp(code, "57P01") || !strcmp(code, "57P02") ||
           !strcmp(code, "57P03");
}

/* Maps a failed statement to an rc; a lost session marks the link broken. */
static int map_error(struct link *l, const PGresult *res)
{
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(l->conn) == CONNECTION_BAD || fatal_sqlstate(code)) {
        l->broken = true;
        return RC_ESTORE;
    }
    if (!strcmp(code, "23505"))
        return RC_ECONFLICT;
    if (!strcmp(code, "23503")) /* foreign key, or the seq triggers' "no such room" */
        return RC_ENOTFOUND;
    if (!strncmp(code, "23", 2) || !strncmp(code, "22", 2)) /* constraint, bad data */
        return RC_EINVAL;
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    log_error("postgres statement failed", "conn=%s sqlstate=%s err=%s", l->name, log_v(code),
              log_v(msg ? msg : "?"));
    return RC_ESTORE;
}

/* Checks a read's (write's) result before its rows are parsed: 0 when it has rows (or,
 * for a write, completed without), else its rc; any other status means the pipeline is
 * out of step and marks the link broken. */
static int result_rc(struct link *l, const PGresult *res, bool write)
{
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_FATAL_ERROR)
        return map_error(l, res);
    if (st == PGRES_TUPLES_OK || (write && st == PGRES_COMMAND_OK))
        return 0;
    if (write)
        log_error("postgres write: unexpected result", "conn=%s status=%s", l->name,
                  PQresStatus(st));
    else
        log_error("postgres read: unexpected result", "conn=%s status=%s", l->name,
                  PQresStatus(st));
    l->broken = true;
    return RC_ESTORE;
}

/* Returns the result of the next command in the pipeline, with the NULL that ends it
 * consumed; NULL (and the link marked broken) when the connection failed. */
static PGresult *next_result(struct link *l)
{
    PGresult *res = PQgetResult(l->conn);
    if (!res) {
        l->broken = true;
        return NULL;
    }
    if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        /* One NULL ends a command's results; anything else means the exchange is lost. */
        PGresult *extra = PQgetResult(l->conn);
        if (extra) {
            PQclear(extra);
            l->broken = true;
        }
    }
    if (PQstatus(l->conn) == CONNECTION_BAD)
        l->broken = true;
    return res;
}

/* Reads the next result and checks it has status want; false otherwise. */
static bool expect_result(struct link *l, ExecStatusType want)
{
    PGresult *res = next_result(l);
    bool ok = res && PQresultStatus(res) == want;
    if (res && !ok && PQresultStatus(res) == PGRES_FATAL_ERROR)
        map_error(l, res);
    PQclear(res);
    return ok && !l->broken;
}

/* ---- connections ---------------------------------------------------------------------- */

/* Copies url into a new string with the password (if any) replaced by "***". */
static char *redact_url(const char *url)
{
    const char *scheme = strstr(url, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    if (!at || !colon || colon > at || (slash && slash < at))
        return xstrdup(url);
    size_t head = (size_t)(colon - url) + 1;
    size_t tail = strlen(at);
    char *out = xmalloc(head + 3 + tail + 1);
    memcpy(out, url, head);
    memcpy(out + head, "***", 3);
    memcpy(out + head + 3, at, tail + 1);
    return out;
}

/* Notice processor: server notices (e.g. "relation already exists") go to the debug log. */
static void on_notice(void *arg, const char *message)
{
    if (log_min_level > LOG_DEBUG)
        return;
    char text[256];
    snprintf(text, sizeof text, "%s", message);
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';
    log_debug("postgres notice", "conn=%s notice=%s", (const char *)arg, log_v(text));
}

/* Connects to url without blocking longer than CONNECT_MS. Returns the connection, or
 * NULL with the reason in err. name becomes the session's application_name unless the
 * URL sets one. */
static PGconn *pg_connect(const char *url, const char *name, char *err, size_t errlen)
{
    char appname[32];
    snprintf(appname, sizeof appname, "rowcast-%s", name);
    /* Options before dbname are defaults the URL may override; dead peers are found by
     * TCP keepalives and the user timeout instead of waiting for the kernel's hours.
     * PG_SESSION_OPTIONS: see there. */
    static const char *const kw[] = {"keepalives_idle",
                                     "keepalives_interval",
                                     "keepalives_count",
                                     "tcp_user_timeout",
                                     "options",
                                     "dbname",
                                     "fallback_application_name",
                                     NULL};
    const char *val[] = {"10", "5", "3", "30000", PG_SESSION_OPTIONS, url, appname, NULL};
    PGconn *c = PQconnectStartParams(kw, val, 1);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int64_t deadline = clock_mono_ms() + CONNECT_MS;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0) {
            snprintf(err, errlen, "timed out after %d ms", CONNECT_MS);
            PQfinish(c);
            return NULL;
        }
        struct pollfd p = {.fd = PQsocket(c),
                           .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            PQfinish(c);
            return NULL;
        }
        if (n > 0)
            st = PQconnectPoll(c);
    }
    if (PQstatus(c) != CONNECTION_OK) {
        const char *m = PQerrorMessage(c);
        size_t len = strlen(m);
        while (len && (m[len - 1] == '\n' || m[len - 1] == ' '))
            len--;
        snprintf(err, errlen, "%.*s", (int)len, m);
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Closes the link's connection (if any). */
static void link_drop(struct link *l)
{
    if (l->conn) {
        PQfinish(l->conn);
        l->conn = NULL;
        l->down_since = clock_mono_ms();
        log_warn("postgres connection lost", "conn=%s", l->name);
        if (l->report)
            metrics_db_connected(0);
    }
    l->broken = false;
}

/* Opens the link's connection in pipeline mode and prepares every statement. */
static int link_open(struct pg_store *s, struct link *l, char *err, size_t errlen)
{
    char e[256] = "", perr[256] = "";
    PGconn *c = pg_connect(s->url, l->name, e, sizeof e);
    if (!c) {
        snprintf(err, errlen, "cannot connect to PostgreSQL at %s: %s", s->url_safe, e);
        return RC_ESTORE;
    }
    PQsetNoticeProcessor(c, on_notice, l->name);
    if (!PQenterPipelineMode(c)) {
        snprintf(err, errlen, "cannot enter pipeline mode: %s", PQerrorMessage(c));
        PQfinish(c);
        return RC_ESTORE;
    }
    l->conn = c;
    l->broken = false;
    bool ok = true;
    for (enum store_pg_stmt i = 0; i < ST_COUNT && ok; i++) {
        char name[8];
        store_pg_stmt_name(i, name);
        ok = PQsendPrepare(c, name, store_pg_stmt_sql(i), 0, NULL) == 1;
    }
    ok = ok && PQpipelineSync(c) == 1;
    for (int i = 0; i < ST_COUNT && ok; i++) {
        PGresult *res = next_result(l);
        ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(perr, sizeof perr, "cannot prepare statement %d: %s", i,
                     res ? PQresultErrorMessage(res) : PQerrorMessage(c));
        PQclear(res);
    }
    ok = ok && expect_result(l, PGRES_PIPELINE_SYNC);
    if (!ok) {
        snprintf(err, errlen, "%s", perr[0] ? perr : PQerrorMessage(c));
        PQfinish(c);
        l->conn = NULL;
        l->broken = false;
        return RC_ESTORE;
    }
    return 0;
}

/* Notices a connection that dropped while idle (e.g. the server terminated it). */
static void link_check(struct link *l)
{
    if (!l->conn)
        return;
    /* Nothing is due while idle: readable means a message (the server's FATAL before
     * it goes away) or the end of the stream, which a second read finds. */
    for (int i = 0; i < 4 && !l->broken; i++) {
        struct pollfd p = {.fd = PQsocket(l->conn), .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            break;
        if (!PQconsumeInput(l->conn))
            l->broken = true;
    }
    PGnotify *n;
    while ((n = PQnotifies(l->conn)))
        PQfreemem(n);
    if (l->broken || PQstatus(l->conn) != CONNECTION_OK)
        link_drop(l);
}

/* While the link is down (a reconnect attempt failed): fails the requests of q that
 * waited WAIT_CONNECT_MS, and every PING at once, or all of them with all. Returns the
 * enqueue time of the oldest request left, or -1 when q is empty. */
static int64_t expire_waiting(struct store_queue *q, bool all)
{
    int64_t oldest;
    struct store_req *expired =
        store_queue_expire(q, all ? INT64_MAX : clock_mono_ms() - WAIT_CONNECT_MS, &oldest);
    complete_all(expired, RC_ESTORE);
    return oldest;
}

/* Makes sure the link is connected before its thread serves q: reconnects with backoff,
 * failing the requests that wait too long meanwhile. Returns true when connected, false
 * when q emptied (or the store is stopping) before a connection came up. */
static bool link_up(struct pg_store *s, struct link *l, struct store_queue *q)
{
    link_check(l);
    while (!l->conn) {
        char err[512] = "";
        if (link_open(s, l, err, sizeof err) == 0) {
            if (l->down_since)
                log_info("postgres reconnected", "conn=%s down_ms=%" PRId64, l->name,
                         clock_mono_ms() - l->down_since);
            l->down_since = 0;
            l->backoff_ms = 0;
            if (l->report)
                metrics_db_connected(1);
            return true;
        }
        int64_t now = clock_mono_ms();
        if (now - l->fail_logged >= FAIL_LOG_MS) {
            log_warn("postgres reconnect failed", "conn=%s err=%s", l->name, log_v(err));
            l->fail_logged = now;
        }
        l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (l->backoff_ms > BACKOFF_MAX_MS)
            l->backoff_ms = BACKOFF_MAX_MS;
        int64_t retry_at = now + l->backoff_ms;
        for (;;) {
            /* Stopping: that attempt was the last one. */
            int64_t oldest = expire_waiting(q, store_queue_stopped(q));
            if (oldest < 0)
                return false;
            now = clock_mono_ms();
            if (now >= retry_at)
                break;
            int64_t until =
                oldest + WAIT_CONNECT_MS < retry_at ? oldest + WAIT_CONNECT_MS : retry_at;
            if (store_queue_sleep(q, until))
                break; /* one more attempt right away, then give up */
        }
    }
    return true;
}

/* Sends a prepared statement into the pipeline. */
static bool send_stmt(struct link *l, enum store_pg_stmt id, const struct store_pg_args *a)
{
    char name[8];
    store_pg_stmt_name(id, name);
    if (PQsendQueryPrepared(l->conn, name, a ? a->n : 0, a ? a->v : NULL, NULL, NULL, 0) != 1) {
        l->broken = true;
        return false;
    }
    return true;
}

/* ---- reads ---------------------------------------------------------------------------- */

/* Runs a list of reads as one pipeline (one statement and one sync point each) and
 * completes each as soon as its result is in. */
static void run_reads(struct link *l, struct store_req *head)
{
    struct store_req *v[READ_BATCH];
    bool sent[READ_BATCH];
    size_t n = 0;
    while (head && n < READ_BATCH) {
        v[n++] = head;
        head = head->_next;
        v[n - 1]->_next = NULL;
    }
    complete_all(head, RC_ESTORE); /* cannot happen: callers take at most READ_BATCH */
    for (size_t i = 0; i < n; i++) {
        struct store_pg_args a = {0};
        enum store_pg_stmt id = store_pg_read_stmt(v[i], &a);
        sent[i] = id != ST_COUNT && !l->broken;
        if (sent[i] && (!send_stmt(l, id, &a) || PQpipelineSync(l->conn) != 1)) {
            l->broken = true;
            sent[i] = false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct store_req *req = v[i];
        if (!sent[i]) {
            req->rc = l->broken ? RC_ESTORE : RC_EINVAL;
        } else if (l->broken) {
            req->rc = RC_ESTORE;
        } else {
            PGresult *res = next_result(l);
            int rc = res ? result_rc(l, res, false) : RC_ESTORE;
            req->rc = rc ? rc : store_pg_parse_read(req, res);
            PQclear(res);
            if (!l->broken && !expect_result(l, PGRES_PIPELINE_SYNC))
                l->broken = true;
            if (l->broken)
                req->rc = RC_ESTORE;
        }
        store_complete(req);
    }
    if (l->broken)
        link_drop(l);
}

/* ---- writes --------------------------------------------------------------------------- */

/* What a batch committed, for the listeners. */
struct committed {
    struct store_change *changes;
    struct store_notif *notifs;
    struct store_docop *docops;
    size_t n_changes, n_notifs, n_docops;
};

/* Takes the room changes the batch's writes logged (in commit order) out of their
 * requests, and copies its notifications and document operations, before the requests go
 * back to their owners. */
static void collect_committed(struct pg_store *s, struct store_req **v, size_t n,
                              struct committed *c)
{
    memset(c, 0, sizeof *c);
    size_t n_changes = 0;
    for (size_t i = 0; i < n; i++)
        n_changes += v[i]->rc ? 0 : v[i]->n_changes;
    if (n_changes && s->listener)
        c->changes = xcalloc(n_changes, sizeof *c->changes);
    for (size_t i = 0; i < n; i++) {
        struct store_req *r = v[i];
        if (!r->rc && c->changes) {
            if (r->n_changes) /* memcpy from NULL is undefined even for 0 bytes */
                memcpy(c->changes + c->n_changes, r->changes,
                       r->n_changes * sizeof *r->changes);
            c->n_changes += r->n_changes;
            free(r->changes);
        } else {
            for (size_t k = 0; k < r->n_changes; k++)
                store_change_cleanup(&r->changes[k]);
            free(r->changes);
        }
        r->changes = NULL;
        r->n_changes = 0;
        if (r->rc)
            continue;
        if (r->op == STORE_NOTIFY_ADD && s->notif_listener) {
            if (!c->notifs)
                c->notifs = xcalloc(n, sizeof *c->notifs);
            struct store_notif *m = &c->notifs[c->n_notifs++];
            *m = r->notif;
            m->user_id = xstrdup(r->notif.user_id);
            m->payload = xstrdup(r->notif.payload);
        } else if (r->op == STORE_DOC_EDIT && s->docop_listener) {
            if (!c->docops)
                c->docops = xcalloc(n, sizeof *c->docops);
            struct store_docop *m = &c->docops[c->n_docops++];
            *m = r->docop;
            m->room_id = xstrdup(r->docop.room_id);
            m->user_id = xstrdup(r->docop.user_id);
            m->operation = xstrdup(r->docop.operation);
            m->data = xstrdup(r->docop.data);
        }
    }
}

/* Hands the committed rows to the listeners, grouped per table, and frees them. The
 * listeners see this store's own commits only: rows written by other nodes or by plain
 * SQL reach subscribers through the LISTEN/NOTIFY bus (bus_pg.c). */
static void deliver_committed(struct pg_store *s, struct committed *c)
{
    if (c->n_changes)
        s->listener(c->changes, c->n_changes, s->listener_arg);
    if (c->n_notifs)
        s->notif_listener(c->notifs, c->n_notifs, s->listener_arg);
    if (c->n_docops)
        s->docop_listener(c->docops, c->n_docops, s->listener_arg);
    for (size_t i = 0; i < c->n_changes; i++)
        store_change_cleanup(&c->changes[i]);
    for (size_t i = 0; i < c->n_notifs; i++)
        store_notif_cleanup(&c->notifs[i]);
    for (size_t i = 0; i < c->n_docops; i++)
        store_docop_cleanup(&c->docops[i]);
    free(c->changes);
    free(c->notifs);
    free(c->docops);
}

/* The pre-locks of a batch: array literals of its rooms and notification users (NULL:
 * none needed), taken in this order right after BEGIN. */
struct batch_locks {
    char *keys[2];
};

static const enum store_pg_stmt lock_stmt[2] = {ST_LOCK_ROOMS, ST_LOCK_USERS};

/* How many requests from v[i] go out as one statement: without savepoints, a run of two
 * or more messages is one multi-row INSERT (one statement instead of one per message);
 * otherwise 1. send_round and read_round walk a batch with it alike. */
static size_t unit_len(struct store_req **v, size_t n, size_t i, bool savepoints)
{
    size_t k = 0;
    if (!savepoints)
        while (i + k < n && v[i + k]->op == STORE_MESSAGE_ADD)
            k++;
    return k >= 2 ? k : 1;
}

/* Sends the multi-row INSERT of the k messages in v. */
static bool send_messages(struct link *l, struct store_req **v, size_t k)
{
    struct store_pg_args a = {0};
    store_pg_messages_args(v, k, &a);
    bool ok = send_stmt(l, ST_MSG_ADD_MANY, &a);
    store_pg_args_cleanup(&a);
    return ok;
}

/* Sends one round of the batch transaction: the opening (first round) or the rollback of
 * the request that failed (later rounds), requests start.., COMMIT, sync. With
 * savepoints, each request runs in its own savepoint, so that one failing costs only
 * itself; without, the round is cheaper (three statements per request become one) and a
 * failure aborts the whole transaction. */
static bool send_round(struct link *l, struct store_req **v, size_t n, size_t start,
                       const struct batch_locks *locks, bool first, bool savepoints)
{
    bool ok = true;
    if (first) {
        ok = send_stmt(l, ST_BEGIN, NULL);
        for (int k = 0; k < 2 && ok; k++) {
            if (!locks->keys[k])
                continue;
            struct store_pg_args a = {.v = {locks->keys[k]}, .n = 1};
            ok = send_stmt(l, lock_stmt[k], &a);
        }
    } else {
        ok = send_stmt(l, ST_ROLLBACK_TO, NULL) && send_stmt(l, ST_RELEASE, NULL);
    }
    for (size_t i = start, k; i < n && ok; i += k) {
        k = unit_len(v, n, i, savepoints);
        if (k > 1) {
            ok = send_messages(l, v + i, k);
            continue;
        }
        struct store_pg_args a = {0};
        enum store_pg_stmt id = store_pg_write_stmt(v[i], &a);
        ok = id != ST_COUNT && /* run_batch took the invalid ones out */
             (!savepoints || send_stmt(l, ST_SAVEPOINT, NULL)) && send_stmt(l, id, &a) &&
             (!savepoints || send_stmt(l, ST_RELEASE, NULL));
        store_pg_args_cleanup(&a);
    }
    ok = ok && send_stmt(l, ST_COMMIT, NULL) && PQpipelineSync(l->conn) == 1;
    if (!ok)
        l->broken = true;
    return ok;
}

/* Result of reading one round. */
enum round_outcome {
    ROUND_COMMITTED, /* every request of the round succeeded, COMMIT went through */
    ROUND_FAILED_AT, /* request *failed failed: the round's later commands were skipped */
    ROUND_LOST,      /* the connection or the transaction is lost */
};

/* Reads the results of a round sent by send_round. */
static enum round_outcome read_round(struct link *l, struct store_req **v, size_t n, size_t start,
                                     const struct batch_locks *locks, bool first,
                                     bool savepoints, size_t *failed)
{
    enum round_outcome out = ROUND_COMMITTED;
    *failed = n;
    /* The opening (BEGIN, the locks), or the rollback to the failed request's savepoint
     * (ROLLBACK TO, RELEASE): one result each, all read whatever they say. */
    ExecStatusType want[3] = {PGRES_COMMAND_OK, PGRES_COMMAND_OK, PGRES_COMMAND_OK};
    int opening = 2;
    if (first) {
        opening = 1;
        for (int k = 0; k < 2; k++)
            if (locks->keys[k])
                want[opening++] = PGRES_TUPLES_OK;
    }
    for (int k = 0; k < opening && !l->broken; k++)
        if (!expect_result(l, want[k]))
            out = ROUND_LOST;
    /* Per request: SAVEPOINT, the request's statement, RELEASE; or the statement alone;
     * or one statement for a run of messages. */
    int per = savepoints ? 3 : 1, mine = savepoints ? 1 : 0;
    for (size_t i = start, len; i < n && !l->broken; i += len) {
        len = unit_len(v, n, i, savepoints);
        bool many = len > 1;
        int results = many ? 1 : per, own = many ? 0 : mine;
        for (int k = 0; k < results && !l->broken; k++) {
            PGresult *res = next_result(l);
            if (!res)
                break;
            ExecStatusType st = PQresultStatus(res);
            if (st == PGRES_PIPELINE_ABORTED) {
                if (out == ROUND_COMMITTED)
                    out = ROUND_LOST; /* skipped without a failure of ours: lost */
            } else if (k == own && out == ROUND_COMMITTED) {
                if (!many) {
                    int rc = result_rc(l, res, true);
                    v[i]->rc = rc ? rc : store_pg_parse_write(v[i], res);
                } else if (st == PGRES_FATAL_ERROR) {
                    map_error(l, res); /* the batch runs again, one request at a time */
                } else if (st != PGRES_TUPLES_OK || !store_pg_parse_messages(v + i, len, res)) {
                    log_error("postgres write: rows of a multi-row INSERT do not match",
                              "conn=%s status=%s", l->name, PQresStatus(st));
                    out = ROUND_LOST;
                }
                if (st == PGRES_FATAL_ERROR) {
                    out = ROUND_FAILED_AT;
                    *failed = i;
                }
            } else if (st != PGRES_COMMAND_OK) {
                if (st == PGRES_FATAL_ERROR)
                    map_error(l, res);
                out = ROUND_LOST;
            }
            PQclear(res);
        }
    }
    /* COMMIT (skipped when a request failed), then the sync point. */
    PGresult *res = l->broken ? NULL : next_result(l);
    if (!res) {
        out = ROUND_LOST;
    } else if (out == ROUND_COMMITTED) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT")) {
            if (PQresultStatus(res) == PGRES_FATAL_ERROR)
                map_error(l, res);
            out = ROUND_LOST;
        }
    }
    PQclear(res);
    if (!l->broken && !expect_result(l, PGRES_PIPELINE_SYNC))
        out = ROUND_LOST;
    if (l->broken)
        out = ROUND_LOST;
    return out;
}

/* Rolls back the open transaction of a link whose connection is fine; false when that
 * fails too (the link is then marked broken). */
static bool rollback(struct link *l)
{
    if (send_stmt(l, ST_ROLLBACK, NULL) && PQpipelineSync(l->conn) == 1) {
        PGresult *res = next_result(l);
        PQclear(res);
        if (!l->broken)
            expect_result(l, PGRES_PIPELINE_SYNC);
    }
    if (l->broken || PQtransactionStatus(l->conn) != PQTRANS_IDLE)
        l->broken = true;
    return !l->broken;
}

/* Tells the session listener which session writes from now on (see store.h). */
static void announce(struct pg_store *s, int pid)
{
    s->announced = pid;
    s->session_listener(pid, s->listener_arg);
}

/* Commits a batch of writes in one transaction and completes them: one pipeline round
 * trip without savepoints; when a request fails, the batch runs again with a savepoint
 * per request, one more round trip per failed request. */
static void run_batch(struct pg_store *s, struct store_req *head)
{
    int64_t t0 = clock_mono_us();
    struct link *l = &s->w;
    struct store_req **v = s->batch;
    size_t n = 0;
    while (head) {
        v[n++] = head;
        head = head->_next;
        v[n - 1]->_next = NULL;
    }
    /* Invalid requests (a notification without a valid message, a broadcast that is not
     * JSON) are answered without a statement. */
    struct store_req *rejected = NULL;
    size_t valid = 0, n_rejected = n;
    for (size_t i = 0; i < n; i++) {
        struct store_pg_args a = {0};
        bool ok = store_pg_write_stmt(v[i], &a) != ST_COUNT;
        store_pg_args_cleanup(&a);
        v[i]->rc = ok ? 0 : RC_EINVAL;
        if (ok) {
            v[valid++] = v[i];
        } else {
            v[i]->_next = rejected;
            rejected = v[i];
        }
    }
    n_rejected -= valid;
    n = valid;
    struct batch_locks locks = {
        {store_pg_batch_keys(v, n, false), store_pg_batch_keys(v, n, true)}};
    size_t start = 0;
    bool first = true, savepoints = false;
    enum round_outcome out = ROUND_COMMITTED;
    while (n > 0) {
        size_t failed = n;
        if (!send_round(l, v, n, start, &locks, first, savepoints)) {
            out = ROUND_LOST;
            break;
        }
        out = read_round(l, v, n, start, &locks, first, savepoints, &failed);
        if (out != ROUND_FAILED_AT)
            break;
        if (!savepoints) {
            /* Nothing of the transaction survives the failure: roll it back and run the
             * whole batch again, each request in its own savepoint. */
            if (l->broken || !rollback(l)) {
                out = ROUND_LOST;
                break;
            }
            for (size_t i = 0; i < n; i++) {
                store_pg_clear_write(v[i]);
                v[i]->rc = 0;
            }
            savepoints = true;
            continue;
        }
        /* The transaction is in the failed request's savepoint: the next round rolls it
         * back and sends the requests after it again. */
        for (size_t i = failed + 1; i < n; i++) {
            store_pg_clear_write(v[i]);
            v[i]->rc = 0;
        }
        start = failed + 1;
        first = false;
    }
    free(locks.keys[0]);
    free(locks.keys[1]);
    if (out == ROUND_LOST) {
        /* Nothing of the batch is known to be committed. */
        for (size_t i = 0; i < n; i++) {
            store_pg_clear_write(v[i]);
            v[i]->rc = RC_ESTORE;
        }
        /* The connection may be fine while the transaction is not: roll it back. */
        if (!l->broken)
            rollback(l);
        if (l->broken)
            link_drop(l);
    }
    struct committed c;
    collect_committed(s, v, n, &c);
    /* Completions first: a sender's ok does not wait behind the fan-out of its own
     * message (as in the SQLite store). */
    metrics_store_batch(n + n_rejected, clock_mono_us() - t0);
    for (size_t i = 0; i < n; i++)
        store_complete(v[i]);
    complete_all(rejected, RC_EINVAL);
    deliver_committed(s, &c);
    /* A commit may have happened unseen: the session listener reads it back. */
    if (out == ROUND_LOST && s->session_listener)
        announce(s, s->w.conn ? PQbackendPID(s->w.conn) : 0);
}

/* ---- threads -------------------------------------------------------------------------- */

/* The writer thread: group commit. */
static void *writer_main(void *arg)
{
    thread_name("rc-pg-writer");
    struct pg_store *s = arg;
    for (;;) {
        if (!store_queue_wait(&s->wq))
            break; /* stopped and drained */
        if (!link_up(s, &s->w, &s->wq))
            continue;
        struct store_req *batch = store_queue_take(&s->wq, (size_t)s->batch_max, 0, NULL);
        if (batch && s->session_listener && s->announced != PQbackendPID(s->w.conn))
            announce(s, PQbackendPID(s->w.conn));
        if (batch)
            run_batch(s, batch);
    }
    return NULL;
}

/* Arguments of a reader thread. */
struct reader_arg {
    struct pg_store *s;
    struct link *l;
};

/* A reader thread: pipelines what it takes from the read queue. */
static void *reader_main(void *arg)
{
    thread_name("rc-pg-reader");
    struct pg_store *s = ((struct reader_arg *)arg)->s;
    struct link *l = ((struct reader_arg *)arg)->l;
    free(arg);
    for (;;) {
        if (!store_queue_wait(&s->rq))
            break;
        if (!link_up(s, l, &s->rq))
            continue;
        struct store_req *batch = store_queue_take(&s->rq, READ_BATCH, 0, NULL);
        if (batch)
            run_reads(l, batch);
    }
    return NULL;
}

/* ---- migrations ----------------------------------------------------------------------- */

/* Runs one command on a plain connection; false (message in err) when it fails. */
static bool exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, errlen, "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(c));
    PQclear(res);
    return ok;
}

/* Applies every migration not yet recorded in schema_migrations, each in its own
 * transaction, under an advisory lock so that nodes starting together take turns. */
static int run_migrations(PGconn *c, int *applied, char *err, size_t errlen)
{
    char e[512] = "";
    int rc = 0;
    *applied = 0;
    if (!exec_ok(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", e, sizeof e)) {
        snprintf(err, errlen, "cannot take the migration lock: %s", e);
        return RC_ESTORE;
    }
    if (!exec_ok(c,
                 "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                 "applied_at timestamptz NOT NULL DEFAULT now())",
                 e, sizeof e)) {
        snprintf(err, errlen, "cannot create schema_migrations: %s", e);
        rc = RC_ESTORE;
        goto out;
    }
    for (const struct migration *m = migrations_postgres; m->name; m++) {
        const char *name[1] = {m->name};
        PGresult *res = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE name = $1", 1, NULL,
                                     name, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
        bool done = ok && PQntuples(res) > 0;
        if (!ok)
            snprintf(e, sizeof e, "%s", PQresultErrorMessage(res));
        PQclear(res);
        if (!ok) {
            snprintf(err, errlen, "cannot read schema_migrations: %s", e);
            rc = RC_ESTORE;
            goto out;
        }
        if (done)
            continue;
        if (!exec_ok(c, "BEGIN", e, sizeof e) || !exec_ok(c, m->sql, e, sizeof e)) {
            snprintf(err, errlen, "migration %s failed: %s", m->name, e);
            exec_ok(c, "ROLLBACK", e, sizeof e);
            rc = RC_ESTORE;
            goto out;
        }
        res = PQexecParams(c, "INSERT INTO schema_migrations(name) VALUES ($1)", 1, NULL, name,
                           NULL, NULL, 0);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(e, sizeof e, "%s", PQresultErrorMessage(res));
        PQclear(res);
        if (!ok || !exec_ok(c, "COMMIT", e, sizeof e)) {
            snprintf(err, errlen, "cannot record migration %s: %s", m->name, e);
            exec_ok(c, "ROLLBACK", e, sizeof e);
            rc = RC_ESTORE;
            goto out;
        }
        log_info("migration applied", "name=%s", m->name);
        (*applied)++;
    }
out:
    exec_ok(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", e, sizeof e);
    /* Trim the newline libpq ends its messages with. */
    size_t len = strlen(err);
    while (len && (err[len - 1] == '\n' || err[len - 1] == ' '))
        err[--len] = '\0';
    return rc;
}

/* Connects to url and applies pending migrations. */
static int migrate_url(const char *url, const char *url_safe, int *applied, char *err,
                       size_t errlen)
{
    char e[256] = "";
    PGconn *c = pg_connect(url, "migrate", e, sizeof e);
    if (!c) {
        snprintf(err, errlen, "cannot connect to PostgreSQL at %s: %s", url_safe, e);
        return RC_ESTORE;
    }
    PQsetNoticeProcessor(c, on_notice, (void *)"migrate");
    int rc = run_migrations(c, applied, err, errlen);
    PQfinish(c);
    return rc;
}

/* ---- the store ------------------------------------------------------------------------ */

/* Stops the threads (after the queues drain), closes the connections, frees s. */
static void pg_destroy(struct pg_store *s)
{
    store_queue_stop(&s->wq);
    store_queue_stop(&s->rq);
    if (s->writer_started)
        pthread_join(s->writer, NULL);
    for (int i = 0; i < s->readers_started; i++)
        pthread_join(s->readers[i], NULL);
    if (s->w.conn)
        PQfinish(s->w.conn);
    for (int i = 0; i < N_READERS; i++)
        if (s->r[i].conn)
            PQfinish(s->r[i].conn);
    /* Nothing can be queued any more: the threads drained the queues (or never ran, and
     * open failed before anyone could submit). */
    store_queue_cleanup(&s->wq);
    store_queue_cleanup(&s->rq);
    free(s->batch);
    free(s->url);
    free(s->url_safe);
    free(s);
}

/* Opens a store at url: migrations, connections, threads. */
static int pg_open(const struct store_options *opts, struct store **out, char *err, size_t errlen)
{
    struct pg_store *s = xcalloc(1, sizeof *s);
    s->base.ops = &store_pg_ops;
    s->url = xstrdup(opts->url);
    s->url_safe = redact_url(opts->url);
    s->batch_max = opts->batch_max > 0 ? opts->batch_max : 1024;
    s->batch = xcalloc((size_t)s->batch_max, sizeof *s->batch);
    s->listener = opts->listener;
    s->listener_arg = opts->listener_arg;
    s->notif_listener = opts->notif_listener;
    s->docop_listener = opts->docop_listener;
    store_queue_init(&s->wq);
    store_queue_init(&s->rq);
    snprintf(s->w.name, sizeof s->w.name, "writer");
    s->w.report = true;
    for (int i = 0; i < N_READERS; i++)
        snprintf(s->r[i].name, sizeof s->r[i].name, "reader%d", i + 1);
    int applied;
    int rc = migrate_url(s->url, s->url_safe, &applied, err, errlen);
    if (rc)
        goto fail;
    if ((rc = link_open(s, &s->w, err, errlen)))
        goto fail;
    for (int i = 0; i < N_READERS; i++)
        if ((rc = link_open(s, &s->r[i], err, errlen)))
            goto fail;
    if (pthread_create(&s->writer, NULL, writer_main, s)) {
        snprintf(err, errlen, "cannot start the store writer thread");
        rc = RC_ESTORE;
        goto fail;
    }
    s->writer_started = true;
    for (int i = 0; i < N_READERS; i++) {
        struct reader_arg *a = xmalloc(sizeof *a);
        a->s = s;
        a->l = &s->r[i];
        if (pthread_create(&s->readers[i], NULL, reader_main, a)) {
            free(a);
            snprintf(err, errlen, "cannot start a store reader thread");
            rc = RC_ESTORE;
            goto fail;
        }
        s->readers_started++;
    }
    *out = &s->base;
    return 0;
fail:
    pg_destroy(s);
    return rc;
}

static int pg_migrate(const char *url, int *applied, char *err, size_t errlen)
{
    char *safe = redact_url(url);
    int rc = migrate_url(url, safe, applied, err, errlen);
    free(safe);
    return rc;
}

static void pg_set_listener(struct store *base, store_change_listener fn, void *arg)
{
    struct pg_store *s = (struct pg_store *)base;
    s->listener = fn;
    s->listener_arg = arg;
}

static void pg_set_listeners(struct store *base, const struct store_listeners *l)
{
    struct pg_store *s = (struct pg_store *)base;
    s->listener = l->changes;
    s->notif_listener = l->notifs;
    s->docop_listener = l->docops;
    s->session_listener = l->session;
    s->listener_arg = l->arg;
}

static void pg_submit(struct store *base, struct store_req *req)
{
    struct pg_store *s = (struct pg_store *)base;
    store_queue_push(store_op_is_write(req->op) ? &s->wq : &s->rq, req);
}

static void pg_close(struct store *base)
{
    pg_destroy((struct pg_store *)base);
}

/* Serves postgres:// and postgresql:// URLs (store.c matches the scheme as a prefix). */
const struct store_ops store_pg_ops = {
    .scheme = "postgres",
    .open = pg_open,
    .migrate = pg_migrate,
    .set_listener = pg_set_listener,
    .set_listeners = pg_set_listeners,
    .submit = pg_submit,
    .close = pg_close,
};

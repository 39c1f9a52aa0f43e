/* bus_pg.c - the PostgreSQL cluster bus (bus.h): a listener thread that LISTENs and
 * delivers committed rows (room changes by version, document operations by seq,
 * notifications by id), and a sender thread for ephemeral NOTIFYs. The rows this node's
 * store writer commits come from memory (bus_pg_on_*), not read back. */
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "bcast.h"
#include "metrics.h"
#include "presence.h"
#include "store.h"
#include "store_pg_int.h"
#include "util/clock.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/sbuf.h"
#include "util/xmalloc.h"

#define CHANNEL "rowcast"
/* NOTIFY payloads must stay under 8000 bytes. */
#define NOTIFY_MAX 7900
/* Rows read per query when filling a gap. */
#define CHUNK 1000
/* Outgoing messages kept while PostgreSQL is unreachable; older ones are dropped. */
#define QUEUE_MAX 10000
#define HEARTBEAT_MS 1000

/* One outgoing statement for the sender thread. */
struct out {
    enum { OUT_NOTIFY, OUT_BIG, OUT_PRESENCE } kind;
    char *a, *b, *c; /* NOTIFY: payload; BIG: topic, event, payload */
    enum bus_presence_op op;
    char *topic, *key, *meta;
    uint64_t conn;
    struct out *next;
};

struct feed;

/* Rows this node's store writer committed (feed: their kind), or (feed NULL) the
 * writer's session changed to pid: handed to the listener thread in commit order. */
struct own {
    const struct feed *feed;
    char *rows;
    size_t n;
    int pid;
    struct own *next;
};

/* A watermark: the highest version (seq, id) delivered. */
struct mark {
    int64_t v;
};

struct pg_bus {
    struct bus base; /* first: the bus_ops handle */
    char *url;
    char *node;
    struct presence *presence; /* this node's state; other nodes' changes go in */
    int reap_ms;
    atomic_bool stop;
    atomic_bool connected;
    pthread_t listener, sender;
    /* sender queue */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct out *head, *tail;
    size_t qlen;
    /* the writer's commits, queued for the listener thread; own_fd wakes it */
    pthread_mutex_t own_mu;
    struct own *own_head, *own_tail;
    size_t own_len;
    bool own_dropped; /* some were dropped (the queue was full): read them back */
    int own_fd;
    /* listener thread only */
    int own_pid; /* the writer's session: its wake-ups for rooms and documents are skipped */
    PGconn *lc;
    struct hmap room_wm, doc_wm, notif_wm;
    int64_t notif_floor; /* notifications at or below this id were there before us */
    bool loaded_once;
};

/* Sleeps ms milliseconds unless the bus is stopping. */
static void nap(struct pg_bus *b, int ms)
{
    for (int t = 0; t < ms && !atomic_load(&b->stop); t += 50) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Gets (creating with value dflt) the watermark for key in map. */
static struct mark *mark_of(struct hmap *m, const char *key, int64_t dflt)
{
    struct mark *k = hmap_get(m, key, strlen(key));
    if (!k) {
        k = xmalloc(sizeof *k);
        k->v = dflt;
        hmap_put(m, key, strlen(key), k);
    }
    return k;
}

/* Runs a statement with text parameters on the listener connection; NULL on error. */
static PGresult *q(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        log_warn("bus query failed", "err=%s", log_v(PQresultErrorMessage(r)));
        PQclear(r);
        return NULL;
    }
    return r;
}

/* Row builders: one result row into a typed array slot, through the store's readers;
 * key is the feed's key (the row's room or user). Each returns the row's order value. */
static int64_t row_change(const PGresult *r, int i, const char *key, void *slot)
{
    struct store_change *c = slot;
    store_pg_read_change(r, i, 0, key, c);
    return c->version;
}
static int64_t row_docop(const PGresult *r, int i, const char *key, void *slot)
{
    struct store_docop *op = slot;
    store_pg_read_docop(r, i, 0, key, op);
    return op->seq;
}
static int64_t row_notif(const PGresult *r, int i, const char *key, void *slot)
{
    struct store_notif *n = slot;
    store_pg_read_notif(r, i, 0, key, n);
    return n->id;
}

/* Frees a row in memory. */
static void change_cleanup(void *row)
{
    store_change_cleanup(row);
}
static void docop_cleanup(void *row)
{
    store_docop_cleanup(row);
}

/* Publishes built rows to this node and frees them. */
static void give_changes(struct pg_bus *b, void *rows, size_t n)
{
    struct store_change *c = rows;
    bus_publish_changes(&b->base, c, n);
    for (size_t i = 0; i < n; i++)
        store_change_cleanup(&c[i]);
}
static void give_docops(struct pg_bus *b, void *rows, size_t n)
{
    struct store_docop *op = rows;
    bus_publish_docops(&b->base, op, n);
    for (size_t i = 0; i < n; i++)
        store_docop_cleanup(&op[i]);
}
static void give_notifs(struct pg_bus *b, void *rows, size_t n)
{
    struct store_notif *ns = rows;
    bus_publish_notifs(&b->base, ns, n);
    for (size_t i = 0; i < n; i++)
        store_notif_cleanup(&ns[i]);
}

/* A kind of row the bus delivers: its query (key, after, limit), prepared under name on
 * every (re)connect, row size, builder. The query selects the columns the builder's
 * store reader reads (store_pg_int.h). */
struct feed {
    const char *name;
    const char *sql;
    size_t size;
    int64_t (*row)(const PGresult *r, int i, const char *key, void *slot);
    void (*give)(struct pg_bus *b, void *rows, size_t n);
    /* rows in memory (this node's commits; cleanup NULL: the feed takes none): the
     * offsets of a row's key (char *) and order value (int64_t), and freeing it */
    size_t key_at, order_at;
    void (*cleanup)(void *row);
};

/* A room's versions are gapless and committed in order (the room's lock is held from the
 * first change of a transaction to its commit), so "after the last one delivered" misses
 * none. */
static const struct feed feed_changes = {
    "rc_feed_changes",
    "SELECT " STORE_PG_CHANGE_COLS("") " FROM room_changes "
    "WHERE room_id = $1 AND version > $2::bigint ORDER BY version LIMIT $3::int",
    sizeof(struct store_change), row_change, give_changes,
    offsetof(struct store_change, room_id), offsetof(struct store_change, version),
    change_cleanup};
static const struct feed feed_docops = {
    "rc_feed_docops",
    "SELECT " STORE_PG_DOCOP_COLS("") " FROM document_ops "
    "WHERE room_id = $1 AND seq > $2::bigint ORDER BY seq LIMIT $3::int",
    sizeof(struct store_docop), row_docop, give_docops, offsetof(struct store_docop, room_id),
    offsetof(struct store_docop, seq), docop_cleanup};
/* Notification ids grow per user in commit order: the schema assigns them under a
 * per-user lock. They are not gapless per user, so a row in memory cannot tell whether
 * another node's came before it: notifications are always read from the database. */
static const struct feed feed_notifs = {
    "rc_feed_notifs",
    "SELECT " STORE_PG_NOTIF_COLS("") " FROM notifications "
    "WHERE user_id = $1 AND id > $2::bigint ORDER BY id LIMIT $3::int",
    sizeof(struct store_notif), row_notif, give_notifs, 0, 0, NULL};
static const struct feed *const feeds[] = {&feed_changes, &feed_docops, &feed_notifs};

/* Prepares the feed queries on a new connection: a wake-up then costs no parse or plan. */
static bool prepare_feeds(PGconn *c)
{
    for (size_t i = 0; i < sizeof feeds / sizeof feeds[0]; i++) {
        PGresult *r = PQprepare(c, feeds[i]->name, feeds[i]->sql, 3, NULL);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            log_warn("bus cannot prepare its queries", "err=%s", log_v(PQresultErrorMessage(r)));
        PQclear(r);
        if (!ok)
            return false;
    }
    return true;
}


/* Delivers the rows of key after its watermark (dflt when none yet), in order, in
 * chunks. A watermark is kept only for keys that had rows: a NOTIFY can name anything
 * (any client of the database may send one), and must not grow the table for nothing. */
static void deliver(struct pg_bus *b, const struct feed *f, struct hmap *marks, const char *key,
                    int64_t dflt)
{
    struct mark *m = hmap_get(marks, key, strlen(key));
    struct mark first = {dflt};
    if (!m)
        m = &first;
    for (;;) {
        char after[32], limit[16];
        snprintf(after, sizeof after, "%lld", (long long)m->v);
        snprintf(limit, sizeof limit, "%d", CHUNK);
        const char *p[] = {key, after, limit};
        PGresult *r = PQexecPrepared(b->lc, f->name, 3, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            log_warn("bus query failed", "err=%s", log_v(PQresultErrorMessage(r)));
            PQclear(r);
            return;
        }
        int n = PQntuples(r);
        if (n) {
            char *rows = xcalloc((size_t)n, f->size);
            for (int i = 0; i < n; i++)
                m->v = f->row(r, i, key, rows + (size_t)i * f->size);
            metrics_bus_rows(false, (uint64_t)n);
            f->give(b, rows, (size_t)n);
            free(rows);
            if (m == &first)
                m = mark_of(marks, key, first.v);
        }
        PQclear(r);
        if (n < CHUNK)
            return;
    }
}

/* A room's changes, a document's operations, a user's notifications. */
static void deliver_room(struct pg_bus *b, const char *room)
{
    deliver(b, &feed_changes, &b->room_wm, room, 0);
}
static void deliver_doc(struct pg_bus *b, const char *room)
{
    deliver(b, &feed_docops, &b->doc_wm, room, 0);
}
static void deliver_notifs(struct pg_bus *b, const char *user)
{
    deliver(b, &feed_notifs, &b->notif_wm, user, b->notif_floor);
}

/* Delivers what room has committed beyond its watermarks, given the counts its row holds
 * now. A count below a watermark means the room was deleted and created again under its
 * id (counting from 0): that watermark starts over. */
static void catch_up_room(struct pg_bus *b, const char *room, int64_t version, int64_t doc)
{
    struct mark *rm = mark_of(&b->room_wm, room, 0), *dm = mark_of(&b->doc_wm, room, 0);
    if (rm->v > version)
        rm->v = 0;
    if (dm->v > doc)
        dm->v = 0;
    if (rm->v < version)
        deliver_room(b, room);
    if (dm->v < doc)
        deliver_doc(b, room);
}

/* NOTIFY 'room_gone:<id>': a room was deleted. Any client of the database can send that
 * text, so it is checked against the room's row: gone, its watermarks go; there again
 * with counts below them, they start over (catch_up_room); otherwise nothing changes and
 * nothing is delivered twice. Whatever a new room has committed is delivered now (its
 * own wake-ups may have been folded into one handled before this). */
static void room_gone(struct pg_bus *b, const char *room)
{
    const char *params[] = {room};
    PGresult *r = q(b->lc, "SELECT version, doc_last_seq FROM rooms WHERE id = $1", 1, params);
    if (!r)
        return;
    if (PQntuples(r))
        catch_up_room(b, room, strtoll(PQgetvalue(r, 0, 0), NULL, 10),
                      strtoll(PQgetvalue(r, 0, 1), NULL, 10));
    else {
        free(hmap_del(&b->room_wm, room, strlen(room)));
        free(hmap_del(&b->doc_wm, room, strlen(room)));
    }
    PQclear(r);
}

/* Publishes a broadcast that arrived over the bus to this node's subscribers. */
static void local_broadcast(struct pg_bus *b, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    json_t *t = json_object_get(j, "t"), *e = json_object_get(j, "e"), *p = json_object_get(j, "p");
    /* Anyone with database access can send this: the same rules as POST /api/broadcast
     * (bounded names, no reserved phx_* events that would end clients' channels). */
    size_t tl = json_string_length(t), el = json_string_length(e);
    if (json_is_string(t) && json_is_string(e) && tl >= 1 && tl <= 255 && el >= 1 &&
        el <= 255 && strncmp(json_string_value(e), "phx_", 4)) {
        char *payload = p && json_is_object(p) ? json_dumps(p, JSON_COMPACT) : xstrdup("{}");
        json_t *n = json_object_get(j, "n"), *x = json_object_get(j, "x");
        uint64_t exclude = 0;
        if (json_is_string(n) && !strcmp(json_string_value(n), b->node) && json_is_integer(x))
            exclude = (uint64_t)json_integer_value(x);
        bus_publish_local(&b->base, json_string_value(t), json_string_value(e), payload,
                            strlen(payload), exclude);
        free(payload);
    }
    json_decref(j);
}

/* Applies another node's presence change. */
static void remote_presence(struct pg_bus *b, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    const char *node = json_string_value(json_object_get(j, "n"));
    const char *op = json_string_value(json_object_get(j, "o"));
    const char *topic = json_string_value(json_object_get(j, "t"));
    const char *key = json_string_value(json_object_get(j, "k"));
    json_t *c = json_object_get(j, "c");
    json_t *meta = json_object_get(j, "m");
    if (node && op && topic && json_is_integer(c) && strcmp(node, b->node)) {
        struct presence *p = b->presence;
        uint64_t conn = (uint64_t)json_integer_value(c);
        char *mt = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
        int rc = 0;
        if (!strcmp(op, "t") && key && mt)
            rc = presence_track_remote(p, node, topic, key, conn, mt);
        else if (!strcmp(op, "u") && mt)
            rc = presence_update_remote(p, node, topic, conn, mt);
        else if (!strcmp(op, "x"))
            rc = presence_untrack_remote(p, node, topic, conn);
        if (rc && rc != RC_ENOTFOUND && rc != RC_ECONFLICT)
            log_warn("bad presence change from another node", "node=%s rc=%d", log_v(node), rc);
        free(mt);
    }
    json_decref(j);
}

/* Handles one NOTIFY payload. */
static void handle(struct pg_bus *b, const char *p)
{
    int64_t t0 = clock_mono_us();
    if (!strncmp(p, "room:", 5))
        deliver_room(b, p + 5);
    else if (!strncmp(p, "document:", 9))
        deliver_doc(b, p + 9);
    else if (!strncmp(p, "notifications:", 14))
        deliver_notifs(b, p + 14);
    else if (!strncmp(p, "room_gone:", 10))
        room_gone(b, p + 10);
    else if (!strncmp(p, "b:", 2))
        local_broadcast(b, p + 2);
    else if (!strncmp(p, "B:", 2)) {
        const char *params[] = {p + 2};
        PGresult *r = q(b->lc,
                        "SELECT json_build_object('t', topic, 'e', event, 'p', payload)::text "
                        "FROM broadcasts WHERE id = $1::bigint",
                        1, params);
        if (r && PQntuples(r))
            local_broadcast(b, PQgetvalue(r, 0, 0));
        PQclear(r);
    } else if (!strncmp(p, "d:", 2))
        b->base.sink.disconnect(b->base.sink.arg, p + 2);
    else if (!strncmp(p, "P:", 2))
        remote_presence(b, p + 2);
    else if (!strncmp(p, "R:", 2) && strcmp(p + 2, b->node)) {
        size_t n = presence_untrack_node(b->presence, p + 2);
        log_info("node reaped", "node=%s presences=%zu", log_v(p + 2), n);
    }
    metrics_bus_notification(clock_mono_us() - t0);
}

/* Loads every other node's presences (at start, and after a reconnect, when what was
 * missed cannot be known otherwise). */
static void load_presences(struct pg_bus *b)
{
    const char *params[] = {b->node};
    PGresult *r = q(b->lc,
                    "SELECT node_id, topic, key, conn_id, meta::text FROM presences "
                    "WHERE node_id <> $1 ORDER BY node_id, conn_id",
                    1, params);
    if (!r)
        return;
    struct presence *p = b->presence;
    for (int i = 0; i < PQntuples(r); i++) {
        int rc = presence_track_remote(p, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                                       PQgetvalue(r, i, 2),
                                       strtoull(PQgetvalue(r, i, 3), NULL, 10),
                                       PQgetvalue(r, i, 4));
        (void)rc; /* already known after a reconnect: RC_ECONFLICT */
    }
    PQclear(r);
}

/* Sets the watermarks from the database (first connect) or fills every gap since the
 * last delivery (reconnect): no committed row is lost across an outage. */
static void sync_marks(struct pg_bus *b)
{
    PGresult *r = q(b->lc, "SELECT id, version, doc_last_seq FROM rooms", 0, NULL);
    if (r) {
        for (int i = 0; i < PQntuples(r); i++) {
            const char *room = PQgetvalue(r, i, 0);
            int64_t version = strtoll(PQgetvalue(r, i, 1), NULL, 10);
            int64_t doc = strtoll(PQgetvalue(r, i, 2), NULL, 10);
            if (!b->loaded_once) {
                mark_of(&b->room_wm, room, version)->v = version;
                mark_of(&b->doc_wm, room, doc)->v = doc;
                continue;
            }
            catch_up_room(b, room, version, doc);
        }
        PQclear(r);
    }
    if (!b->loaded_once) {
        r = q(b->lc, "SELECT COALESCE(MAX(id), 0) FROM notifications", 0, NULL);
        if (r && PQntuples(r))
            b->notif_floor = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    } else {
        char floor[32];
        snprintf(floor, sizeof floor, "%lld", (long long)b->notif_floor);
        const char *params[] = {floor};
        r = q(b->lc, "SELECT DISTINCT user_id FROM notifications WHERE id > $1::bigint", 1,
              params);
        for (int i = 0; r && i < PQntuples(r); i++)
            deliver_notifs(b, PQgetvalue(r, i, 0));
        PQclear(r);
    }
}

/* ---- this node's own commits ------------------------------------------------------------ */

/* Publishes the k rows gathered in out (this node's own, from memory); returns 0. */
static size_t give_own(struct pg_bus *b, const struct feed *f, char *out, size_t k)
{
    if (k) {
        metrics_bus_rows(true, k);
        f->give(b, out, k);
    }
    return 0;
}

/* Publishes rows this node's writer committed, from memory: a row right after its key's
 * watermark goes out as it is; one further on means rows of other sessions came between
 * (their wake-ups may still be on the way), and the key is read from the database, which
 * has them all; one at or below the watermark went out already. Frees the rows. */
static void deliver_own(struct pg_bus *b, const struct feed *f, char *rows, size_t n)
{
    struct hmap *marks = f == &feed_changes ? &b->room_wm : &b->doc_wm;
    char *out = xcalloc(n, f->size);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char *row = rows + i * f->size;
        const char *key = *(char **)(row + f->key_at);
        int64_t v = *(int64_t *)(row + f->order_at);
        struct mark *m = mark_of(marks, key, 0);
        if (v == m->v + 1) {
            memcpy(out + k++ * f->size, row, f->size);
            m->v = v;
            continue;
        }
        if (v > m->v + 1) {
            k = give_own(b, f, out, k); /* what went before first, in order */
            deliver(b, f, marks, key, 0);
        }
        f->cleanup(row);
    }
    give_own(b, f, out, k);
    free(out);
}

/* Delivers what the writer handed over. A new session (or a batch whose outcome is
 * unknown, or rows dropped from a full queue) means commits may have happened whose
 * wake-ups were skipped as the writer's own: everything is read back from the
 * database. */
static void handle_own(struct pg_bus *b)
{
    uint64_t tick;
    if (read(b->own_fd, &tick, sizeof tick) < 0 && errno != EAGAIN)
        log_warn("bus cannot read its wake-up", "err=%s", log_v(strerror(errno)));
    pthread_mutex_lock(&b->own_mu);
    struct own *o = b->own_head;
    bool dropped = b->own_dropped;
    b->own_head = b->own_tail = NULL;
    b->own_len = 0;
    b->own_dropped = false;
    pthread_mutex_unlock(&b->own_mu);
    bool catch_up = dropped;
    while (o) {
        struct own *next = o->next;
        if (o->feed) {
            deliver_own(b, o->feed, o->rows, o->n);
        } else {
            b->own_pid = o->pid;
            catch_up = true;
        }
        free(o->rows);
        free(o);
        o = next;
    }
    if (catch_up)
        sync_marks(b);
}

/* Frees a queued item and the rows it still holds. */
static void own_free(struct own *o)
{
    for (size_t i = 0; o->feed && i < o->n; i++)
        o->feed->cleanup(o->rows + i * o->feed->size);
    free(o->rows);
    free(o);
}

/* Queues for the listener thread the n rows of feed f (or, f NULL, the session pid) and
 * wakes it; a full queue drops the rows and has the listener read everything back
 * instead. */
static void own_push(struct pg_bus *b, const struct feed *f, void *rows, size_t n, int pid)
{
    struct own *o = xcalloc(1, sizeof *o);
    *o = (struct own){.feed = f, .rows = rows, .n = n, .pid = pid};
    pthread_mutex_lock(&b->own_mu);
    bool drop = f && b->own_len >= QUEUE_MAX;
    if (drop) {
        b->own_dropped = true;
    } else {
        if (b->own_tail)
            b->own_tail->next = o;
        else
            b->own_head = o;
        b->own_tail = o;
        b->own_len++;
    }
    pthread_mutex_unlock(&b->own_mu);
    if (drop)
        own_free(o);
    uint64_t one = 1;
    if (write(b->own_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_warn("bus cannot wake its listener", "err=%s", log_v(strerror(errno)));
}

void bus_pg_on_changes(const struct store_change *cs, size_t n, void *bus)
{
    struct store_change *rows = xcalloc(n, sizeof *rows);
    for (size_t i = 0; i < n; i++)
        store_change_copy(&rows[i], &cs[i]);
    own_push(bus, &feed_changes, rows, n, 0);
}

void bus_pg_on_docops(const struct store_docop *ops, size_t n, void *bus)
{
    struct store_docop *rows = xcalloc(n, sizeof *rows);
    for (size_t i = 0; i < n; i++)
        store_docop_copy(&rows[i], &ops[i]);
    own_push(bus, &feed_docops, rows, n, 0);
}

void bus_pg_on_session(int pid, void *bus)
{
    own_push(bus, NULL, NULL, 0, pid);
}

/* (Re)connects the listener: LISTEN, register the node, catch up. */
static bool listener_connect(struct pg_bus *b)
{
    static const char *const kw[] = {"options", "dbname", NULL};
    const char *val[] = {PG_SESSION_OPTIONS, b->url, NULL};
    b->lc = PQconnectdbParams(kw, val, 1);
    if (PQstatus(b->lc) != CONNECTION_OK) {
        log_warn("bus cannot connect", "err=%s", log_v(PQerrorMessage(b->lc)));
        PQfinish(b->lc);
        b->lc = NULL;
        return false;
    }
    const char *params[] = {b->node};
    PGresult *r = q(b->lc, "LISTEN " CHANNEL, 0, NULL);
    PQclear(r);
    if (!r || !prepare_feeds(b->lc)) {
        PQfinish(b->lc);
        b->lc = NULL;
        return false;
    }
    r = q(b->lc,
          "INSERT INTO nodes(id, heartbeat_at) VALUES ($1, now()) ON CONFLICT (id) DO UPDATE "
          "SET heartbeat_at = now()",
          1, params);
    if (!r) {
        PQfinish(b->lc);
        b->lc = NULL;
        return false;
    }
    PQclear(r);
    if (b->loaded_once) {
        /* What other nodes did meanwhile is unknown: forget and reload their presences. */
        r = q(b->lc, "SELECT id FROM nodes WHERE id <> $1", 1, params);
        for (int i = 0; r && i < PQntuples(r); i++)
            presence_untrack_node(b->presence, PQgetvalue(r, i, 0));
        PQclear(r);
    }
    load_presences(b);
    sync_marks(b);
    b->loaded_once = true;
    atomic_store(&b->connected, true);
    metrics_bus_connected(1);
    log_info("bus connected", "node=%s", log_v(b->node));
    return true;
}

/* Heartbeat this node and reap the dead ones (each reaped node's id is NOTIFYed as
 * "R:<id>" so every node drops its presences and sends the leaves). */
static void heartbeat(struct pg_bus *b)
{
    char reap[32];
    snprintf(reap, sizeof reap, "%d milliseconds", b->reap_ms);
    const char *params[] = {b->node, reap};
    PGresult *r = q(b->lc, "UPDATE nodes SET heartbeat_at = now() WHERE id = $1", 1, params);
    PQclear(r);
    r = q(b->lc,
          "WITH dead AS (DELETE FROM nodes WHERE id <> $1 AND heartbeat_at < now() - "
          "$2::interval RETURNING id) SELECT pg_notify('" CHANNEL "', 'R:' || id) FROM dead",
          2, params);
    PQclear(r);
}

/* Handles the wake-ups that have arrived, in order, each row feed key once per round:
 * a round first takes every wake-up libpq holds, so the one delivery of a room reads the
 * rows of all of them. Wake-ups that arrive while a round runs its queries make the next
 * round. */
static void handle_pending(struct pg_bus *b)
{
    PGnotify **v = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        PGnotify *x;
        while ((x = PQnotifies(b->lc))) {
            ARRAY_GROW(v, n, cap);
            v[n++] = x;
        }
        if (!n)
            break;
        struct hmap seen = HMAP_INIT;
        for (size_t i = 0; i < n; i++) {
            const char *p = v[i]->extra;
            bool own_feed = !strncmp(p, "room:", 5) || !strncmp(p, "document:", 9);
            bool feed = own_feed || !strncmp(p, "notifications:", 14);
            if (own_feed && b->own_pid && v[i]->be_pid == b->own_pid)
                continue; /* the writer hands those rows over (handle_own) */
            if (!feed || !hmap_put(&seen, p, strlen(p), v[i]))
                handle(b, p);
        }
        hmap_cleanup(&seen);
        for (size_t i = 0; i < n; i++)
            PQfreemem(v[i]);
        n = 0;
    }
    free(v);
}

/* The listener thread. */
static void *listener_main(void *arg)
{
    thread_name("rc-bus-listen");
    struct pg_bus *b = arg;
    int backoff = 100;
    int64_t next_beat = 0;
    while (!atomic_load(&b->stop)) {
        if (!b->lc || PQstatus(b->lc) != CONNECTION_OK) {
            if (b->lc) {
                PQfinish(b->lc);
                b->lc = NULL;
                atomic_store(&b->connected, false);
                metrics_bus_connected(0);
                log_warn("bus connection lost; reconnecting", NULL);
            }
            if (!listener_connect(b)) {
                nap(b, backoff);
                backoff = backoff < 5000 ? backoff * 2 : 5000;
                continue;
            }
            backoff = 100;
        }
        struct pollfd pfd[2] = {{.fd = PQsocket(b->lc), .events = POLLIN},
                                {.fd = b->own_fd, .events = POLLIN}};
        poll(pfd, 2, 200);
        if (pfd[1].revents & POLLIN)
            handle_own(b);
        if (!PQconsumeInput(b->lc)) {
            PQfinish(b->lc);
            b->lc = NULL;
            atomic_store(&b->connected, false);
            metrics_bus_connected(0);
            log_warn("bus connection lost; reconnecting", NULL);
            continue;
        }
        handle_pending(b);
        int64_t now = clock_mono_ms();
        if (now >= next_beat) {
            heartbeat(b);
            next_beat = now + HEARTBEAT_MS;
        }
    }
    if (b->lc) {
        const char *params[] = {b->node};
        PGresult *r = q(b->lc, "DELETE FROM nodes WHERE id = $1", 1, params);
        PQclear(r);
        PQfinish(b->lc);
        b->lc = NULL;
    }
    return NULL;
}

/* Frees an outgoing message. */
static void out_free(struct out *o)
{
    free(o->a);
    free(o->b);
    free(o->c);
    free(o->topic);
    free(o->key);
    free(o->meta);
    free(o);
}

/* Runs one outgoing message on the sender's connection; false when the connection
 * failed (the message is kept for after the reconnect). */
static bool send_one(struct pg_bus *b, PGconn *c, struct out *o)
{
    PGresult *r = NULL;
    if (o->kind == OUT_NOTIFY) {
        const char *p[] = {o->a};
        r = PQexecParams(c, "SELECT pg_notify('" CHANNEL "', $1)", 1, NULL, p, NULL, NULL, 0);
    } else if (o->kind == OUT_BIG) {
        const char *p[] = {o->a, o->b, o->c};
        r = PQexecParams(c, "SELECT rowcast_broadcast($1, $2, $3::jsonb)", 3, NULL, p, NULL,
                         NULL, 0);
    } else {
        char conn[32];
        snprintf(conn, sizeof conn, "%llu", (unsigned long long)o->conn);
        if (o->op == BUS_UNTRACK) {
            const char *p[] = {b->node, o->topic, conn, o->a};
            r = PQexecParams(c,
                             "WITH d AS (DELETE FROM presences WHERE node_id = $1 AND topic = $2 "
                             "AND conn_id = $3::bigint) SELECT pg_notify('" CHANNEL "', $4)",
                             4, NULL, p, NULL, NULL, 0);
        } else {
            const char *p[] = {b->node, o->topic, o->key ? o->key : "", conn, o->meta, o->a};
            r = PQexecParams(
                c,
                "WITH u AS (INSERT INTO presences(node_id, topic, key, conn_id, meta) VALUES "
                "($1, $2, $3, $4::bigint, $5::jsonb) ON CONFLICT (node_id, topic, conn_id) DO "
                "UPDATE SET meta = EXCLUDED.meta) SELECT pg_notify('" CHANNEL "', $6)",
                6, NULL, p, NULL, NULL, 0);
        }
    }
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        log_warn("bus send failed", "err=%s", log_v(PQresultErrorMessage(r)));
    PQclear(r);
    return ok || PQstatus(c) == CONNECTION_OK; /* a bad statement is dropped, not retried */
}

/* The sender thread: sends queued NOTIFYs in order, reconnecting when needed. */
static void *sender_main(void *arg)
{
    thread_name("rc-bus-send");
    struct pg_bus *b = arg;
    PGconn *c = NULL;
    int backoff = 100;
    for (;;) {
        pthread_mutex_lock(&b->mu);
        while (!b->head && !atomic_load(&b->stop))
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head && atomic_load(&b->stop)) {
            pthread_mutex_unlock(&b->mu);
            break;
        }
        struct out *o = b->head;
        pthread_mutex_unlock(&b->mu);
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = PQconnectdb(b->url);
            if (PQstatus(c) != CONNECTION_OK) {
                if (atomic_load(&b->stop))
                    break;
                nap(b, backoff);
                backoff = backoff < 5000 ? backoff * 2 : 5000;
                continue;
            }
            backoff = 100;
        }
        if (!send_one(b, c, o))
            continue; /* reconnect, then try it again */
        pthread_mutex_lock(&b->mu);
        b->head = o->next;
        if (!b->head)
            b->tail = NULL;
        b->qlen--;
        pthread_mutex_unlock(&b->mu);
        out_free(o);
    }
    PQfinish(c);
    return NULL;
}

/* Queues o for the sender, dropping the oldest when PostgreSQL has been away long. */
static void enqueue(struct pg_bus *b, struct out *o)
{
    o->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = o;
    else
        b->head = o;
    b->tail = o;
    b->qlen++;
    struct out *drop = NULL;
    if (b->qlen > QUEUE_MAX && b->head != o) {
        /* Keep the head (it may be in flight); drop the one after it. */
        drop = b->head->next;
        b->head->next = drop->next;
        if (b->tail == drop)
            b->tail = b->head;
        b->qlen--;
    }
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (drop) {
        log_warn("bus queue full; dropping an ephemeral event", NULL);
        out_free(drop);
    }
}

/* bus_ops.broadcast */
static void pg_broadcast(struct bus *base, const char *topic, const char *event,
                         const char *payload, size_t payload_len, uint64_t exclude)
{
    struct pg_bus *b = (struct pg_bus *)base;
    struct sbuf s = SBUF_INIT;
    sbuf_adds(&s, "b:{\"e\":");
    sbuf_add_json_str(&s, event, strlen(event));
    sbuf_adds(&s, ",\"n\":");
    sbuf_add_json_str(&s, b->node, strlen(b->node));
    sbuf_adds(&s, ",\"p\":");
    sbuf_add(&s, payload, payload_len);
    sbuf_adds(&s, ",\"t\":");
    sbuf_add_json_str(&s, topic, strlen(topic));
    sbuf_printf(&s, ",\"x\":%llu}", (unsigned long long)exclude);
    struct out *o = xcalloc(1, sizeof *o);
    if (s.len < NOTIFY_MAX) {
        o->kind = OUT_NOTIFY;
        o->a = sbuf_steal(&s, NULL);
    } else { /* too big for a payload: a row of broadcasts (no exclusion) */
        o->kind = OUT_BIG;
        o->a = xstrdup(topic);
        o->b = xstrdup(event);
        o->c = xstrndup(payload, payload_len);
    }
    sbuf_cleanup(&s);
    enqueue(b, o);
}

/* bus_ops.disconnect_user */
static void pg_disconnect_user(struct bus *base, const char *user)
{
    struct pg_bus *b = (struct pg_bus *)base;
    struct out *o = xcalloc(1, sizeof *o);
    o->kind = OUT_NOTIFY;
    size_t n = strlen(user) + 3;
    o->a = xmalloc(n);
    snprintf(o->a, n, "d:%s", user);
    enqueue(b, o);
}

/* bus_ops.presence */
static void pg_presence(struct bus *base, enum bus_presence_op op, const char *topic,
                        const char *key, uint64_t conn_id, const char *meta_json)
{
    struct pg_bus *b = (struct pg_bus *)base;
    json_t *j = json_pack("{s:s,s:s,s:s,s:I}", "n", b->node, "o",
                          op == BUS_TRACK ? "t" : op == BUS_UPDATE ? "u" : "x", "t", topic, "c",
                          (json_int_t)conn_id);
    if (key)
        json_object_set_new(j, "k", json_string(key));
    if (meta_json)
        json_object_set_new(j, "m", json_loads(meta_json, 0, NULL));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return;
    struct out *o = xcalloc(1, sizeof *o);
    o->kind = OUT_PRESENCE;
    o->op = op;
    size_t n = strlen(text) + 3;
    o->a = xmalloc(n);
    snprintf(o->a, n, "P:%s", text);
    free(text);
    if (strlen(o->a) >= NOTIFY_MAX) {
        log_warn("presence meta too large for the bus", "topic=%s", log_v(topic));
        out_free(o);
        return;
    }
    o->topic = xstrdup(topic);
    o->key = key ? xstrdup(key) : NULL;
    o->meta = meta_json ? xstrdup(meta_json) : NULL;
    o->conn = conn_id;
    enqueue(b, o);
}

/* bus_ops.state */
static enum bus_state pg_state(struct bus *base)
{
    return atomic_load(&((struct pg_bus *)base)->connected) ? BUS_UP : BUS_DOWN;
}

static void pg_stop(struct bus *base);

static const struct bus_ops pg_ops = {
    .broadcast = pg_broadcast,
    .disconnect_user = pg_disconnect_user,
    .presence = pg_presence,
    .state = pg_state,
    .stop = pg_stop,
};

int bus_pg_start(const char *url, const struct bus_sink *sink, struct presence *presence,
                 const char *node_id, int reap_after_ms, struct bus **out, char *err,
                 size_t errlen)
{
    struct pg_bus *b = xcalloc(1, sizeof *b);
    b->base.ops = &pg_ops;
    b->base.sink = *sink;
    b->url = xstrdup(url);
    b->node = xstrdup(node_id);
    b->presence = presence;
    b->reap_ms = reap_after_ms;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    pthread_mutex_init(&b->own_mu, NULL);
    b->own_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->own_fd < 0) {
        snprintf(err, errlen, "cannot create the bus's eventfd: %s", strerror(errno));
        pg_stop(&b->base);
        return RC_ESTORE;
    }
    if (!listener_connect(b)) {
        snprintf(err, errlen, "cannot connect the bus to PostgreSQL");
        pg_stop(&b->base);
        return RC_ESTORE;
    }
    if (pthread_create(&b->listener, NULL, listener_main, b) ||
        pthread_create(&b->sender, NULL, sender_main, b)) {
        snprintf(err, errlen, "cannot start the bus threads");
        return RC_ESTORE;
    }
    *out = &b->base;
    return 0;
}

/* Frees one watermark. */
static void free_mark(const char *key, void *value, void *arg)
{
    free(value);
}

/* bus_ops.stop */
static void pg_stop(struct bus *base)
{
    struct pg_bus *b = (struct pg_bus *)base;
    atomic_store(&b->stop, true);
    pthread_mutex_lock(&b->mu);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (b->listener)
        pthread_join(b->listener, NULL);
    if (b->sender)
        pthread_join(b->sender, NULL);
    if (b->lc)
        PQfinish(b->lc);
    while (b->head) {
        struct out *o = b->head;
        b->head = o->next;
        out_free(o);
    }
    while (b->own_head) {
        struct own *o = b->own_head;
        b->own_head = o->next;
        own_free(o);
    }
    if (b->own_fd >= 0)
        close(b->own_fd);
    pthread_mutex_destroy(&b->own_mu);
    struct hmap *maps[] = {&b->room_wm, &b->doc_wm, &b->notif_wm};
    for (int i = 0; i < 3; i++) {
        hmap_each(maps[i], free_mark, NULL);
        hmap_cleanup(maps[i]);
    }
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b->url);
    free(b->node);
    free(b);
}

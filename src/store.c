#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "store.h"
#include "util/sbuf.h"
#include <jansson.h>
#include "util/xmalloc.h"

struct store_req *store_req_create(enum store_op op)
{
    struct store_req *r = xcalloc(1, sizeof *r);
    r->op = op;
    r->after_seq = -1;
    r->before_seq = -1;
    r->since_version = -1;
    r->since_ms = -1;
    r->limit = 50;
    return r;
}

void store_msg_cleanup(struct store_msg *m)
{
    free(m->room_id);
    free(m->user_id);
    free(m->body);
    free(m->reactions);
    m->room_id = m->user_id = m->body = m->reactions = NULL;
}

/* A copy of s, or NULL for NULL. */
static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

struct store_msg *store_msgs_dup(const struct store_msg *msgs, size_t n)
{
    if (!n)
        return NULL;
    struct store_msg *out = xmalloc(n * sizeof *out);
    for (size_t i = 0; i < n; i++) {
        out[i] = msgs[i];
        out[i].room_id = dup_or_null(msgs[i].room_id);
        out[i].user_id = dup_or_null(msgs[i].user_id);
        out[i].body = dup_or_null(msgs[i].body);
        out[i].reactions = dup_or_null(msgs[i].reactions);
    }
    return out;
}

void store_change_cleanup(struct store_change *c)
{
    free(c->room_id);
    free(c->user_id);
    free(c->event);
    free(c->payload);
    c->room_id = c->user_id = c->event = c->payload = NULL;
}

void store_change_copy(struct store_change *dst, const struct store_change *src)
{
    *dst = *src;
    dst->room_id = dup_or_null(src->room_id);
    dst->user_id = dup_or_null(src->user_id);
    dst->event = dup_or_null(src->event);
    dst->payload = dup_or_null(src->payload);
}

void store_docop_copy(struct store_docop *dst, const struct store_docop *src)
{
    *dst = *src;
    dst->room_id = dup_or_null(src->room_id);
    dst->user_id = dup_or_null(src->user_id);
    dst->operation = dup_or_null(src->operation);
    dst->data = dup_or_null(src->data);
}

void store_user_room_cleanup(struct store_user_room *r)
{
    free(r->room_id);
    free(r->name);
    free(r->role);
    r->room_id = r->name = r->role = NULL;
}

/* Frees a member's strings. */
static void member_cleanup(struct store_member *m)
{
    free(m->room_id);
    free(m->user_id);
    free(m->role);
    free(m->name);
    free(m->avatar_url);
}

void store_notif_cleanup(struct store_notif *n)
{
    free(n->user_id);
    free(n->payload);
    n->user_id = n->payload = NULL;
}

void store_docop_cleanup(struct store_docop *op)
{
    free(op->room_id);
    free(op->user_id);
    free(op->operation);
    free(op->data);
    op->room_id = op->user_id = op->operation = op->data = NULL;
}

void store_req_destroy(struct store_req *r)
{
    if (!r)
        return;
    free(r->room_id);
    free(r->user_id);
    free(r->name);
    free(r->avatar_url);
    free(r->role);
    free(r->body);
    free(r->data);
    store_notif_cleanup(&r->notif);
    for (size_t i = 0; i < r->n_notifs; i++)
        store_notif_cleanup(&r->notifs[i]);
    free(r->notifs);
    store_docop_cleanup(&r->docop);
    for (size_t i = 0; i < r->n_docops; i++)
        store_docop_cleanup(&r->docops[i]);
    free(r->docops);
    free(r->user.id);
    free(r->user.name);
    free(r->user.avatar_url);
    free(r->room.id);
    free(r->room.name);
    member_cleanup(&r->member);
    store_msg_cleanup(&r->msg);
    for (size_t i = 0; i < r->n_msgs; i++)
        store_msg_cleanup(&r->msgs[i]);
    free(r->msgs);
    for (size_t i = 0; i < r->n_members; i++)
        member_cleanup(&r->members[i]);
    free(r->members);
    for (size_t i = 0; i < r->n_changes; i++)
        store_change_cleanup(&r->changes[i]);
    free(r->changes);
    for (size_t i = 0; i < r->n_user_rooms; i++)
        store_user_room_cleanup(&r->user_rooms[i]);
    free(r->user_rooms);
    free(r);
}

static const struct store_ops *const backends[] = {&store_sqlite_ops, &store_pg_ops};

/* Finds the backend for a database URL. */
static const struct store_ops *backend_for(const char *url, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (!strncmp(url, backends[i]->scheme, strlen(backends[i]->scheme)))
            return backends[i];
    snprintf(err, errlen,
             "unsupported database URL \"%s\" (want sqlite:PATH or postgres://USER@HOST/DB)",
             url);
    return NULL;
}

int store_open(const struct store_options *opts, struct store **out, char *err, size_t errlen)
{
    const struct store_ops *ops = backend_for(opts->url, err, errlen);
    if (!ops)
        return RC_EINVAL;
    int rc = ops->open(opts, out, err, errlen);
    if (rc == 0)
        (*out)->ops = ops;
    return rc;
}

int store_migrate(const char *url, int *applied, char *err, size_t errlen)
{
    const struct store_ops *ops = backend_for(url, err, errlen);
    if (!ops)
        return RC_EINVAL;
    return ops->migrate(url, applied, err, errlen);
}

void store_set_listener(struct store *s, store_change_listener fn, void *arg)
{
    s->ops->set_listener(s, fn, arg);
}

void store_set_listeners(struct store *s, const struct store_listeners *l)
{
    s->ops->set_listeners(s, l);
}

void store_submit(struct store *s, struct store_req *req)
{
    metrics_store_queue(1);
    s->ops->submit(s, req);
}

void store_complete(struct store_req *req)
{
    metrics_store_queue(-1);
    req->done(req);
}

bool store_op_is_write(enum store_op op)
{
    switch (op) {
    case STORE_USER_PUT:
    case STORE_ROOM_CREATE:
    case STORE_ROOM_DELETE:
    case STORE_MEMBER_PUT:
    case STORE_MEMBER_DELETE:
    case STORE_MESSAGE_ADD:
    case STORE_NOTIFY_ADD:
    case STORE_NOTIFY_READ:
    case STORE_DOC_EDIT:
    case STORE_DEV_SETUP:
    case STORE_MESSAGE_EDIT:
    case STORE_MESSAGE_DELETE:
    case STORE_REACTION_PUT:
    case STORE_REACTION_DELETE:
    case STORE_READ_MARK:
    case STORE_BROADCAST_ADD:
        return true;
    default:
        return false;
    }
}

void store_close(struct store *s)
{
    if (s)
        s->ops->close(s);
}

void store_msg_append_json(struct sbuf *out, const struct store_msg *m)
{
    if (m->deleted_at[0]) {
        sbuf_adds(out, "{\"deleted\":true,\"deleted_at\":");
        sbuf_add_json_str(out, m->deleted_at, strlen(m->deleted_at));
        sbuf_printf(out, ",\"seq\":%lld}", (long long)m->seq);
        return;
    }
    sbuf_adds(out, "{\"body\":");
    sbuf_add_json_str(out, m->body, strlen(m->body));
    if (m->edited_at[0]) {
        sbuf_adds(out, ",\"edited_at\":");
        sbuf_add_json_str(out, m->edited_at, strlen(m->edited_at));
    }
    sbuf_printf(out, ",\"id\":%lld,\"inserted_at\":", (long long)m->id);
    sbuf_add_json_str(out, m->inserted_at, strlen(m->inserted_at));
    sbuf_adds(out, ",\"reactions\":");
    sbuf_adds(out, m->reactions ? m->reactions : "[]");
    sbuf_printf(out, ",\"reply_count\":%lld", (long long)m->reply_count);
    if (m->reply_to > 0)
        sbuf_printf(out, ",\"reply_to\":%lld", (long long)m->reply_to);
    sbuf_printf(out, ",\"seq\":%lld,\"user_id\":", (long long)m->seq);
    sbuf_add_json_str(out, m->user_id, strlen(m->user_id));
    sbuf_addc(out, '}');
}

bool store_change_payload_ok(const struct store_change *c)
{
    json_t *j = c->event && c->payload ? json_loads(c->payload, 0, NULL) : NULL;
    bool ok = json_is_object(j);
    json_decref(j);
    return ok;
}

void store_changes_append_json(struct sbuf *out, const struct store_req *req)
{
    size_t n = req->n_changes;
    bool more = n && (size_t)req->limit == n && req->changes[n - 1].version < req->room.version;
    bool first = true;
    sbuf_adds(out, "{\"changes\":[");
    for (size_t i = 0; i < n; i++) {
        if (!store_change_payload_ok(&req->changes[i]))
            continue;
        if (!first)
            sbuf_addc(out, ',');
        first = false;
        store_change_append_json(out, &req->changes[i]);
    }
    sbuf_printf(out, "],\"has_more\":%s,\"version\":%lld}", more ? "true" : "false",
                (long long)req->room.version);
}

void store_change_append_json(struct sbuf *out, const struct store_change *c)
{
    sbuf_adds(out, "{\"event\":");
    sbuf_add_json_str(out, c->event, strlen(c->event));
    sbuf_adds(out, ",\"payload\":");
    sbuf_adds(out, c->payload);
    sbuf_addc(out, '}');
}

/* Appends member key of the parsed object obj (or null) as JSON text. */
static void append_member(struct sbuf *out, json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    sbuf_adds(out, text ? text : "null");
    free(text);
}

void store_notif_append_json(struct sbuf *out, const struct store_notif *n)
{
    /* The payload is a stored row, possibly written by anyone: parsed, not pasted. */
    json_t *p = json_loads(n->payload, JSON_DECODE_ANY, NULL);
    sbuf_adds(out, "{\"data\":");
    append_member(out, p, "data");
    sbuf_printf(out, ",\"id\":%lld,\"inserted_at\":", (long long)n->id);
    sbuf_add_json_str(out, n->inserted_at, strlen(n->inserted_at));
    sbuf_adds(out, ",\"message\":");
    append_member(out, p, "message");
    sbuf_addc(out, '}');
    json_decref(p);
}

void store_docop_append_json(struct sbuf *out, const struct store_docop *op)
{
    json_t *d = json_loads(op->data ? op->data : "null", JSON_DECODE_ANY, NULL);
    char *data = d ? json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    sbuf_adds(out, "{\"data\":");
    sbuf_adds(out, data ? data : "null");
    free(data);
    json_decref(d);
    sbuf_adds(out, ",\"inserted_at\":");
    sbuf_add_json_str(out, op->inserted_at, strlen(op->inserted_at));
    sbuf_adds(out, ",\"operation\":");
    sbuf_add_json_str(out, op->operation, strlen(op->operation));
    sbuf_printf(out, ",\"seq\":%lld,\"user_id\":", (long long)op->seq);
    sbuf_add_json_str(out, op->user_id, strlen(op->user_id));
    sbuf_addc(out, '}');
}

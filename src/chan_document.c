/* chan_document.c - document:<id>: an operation log shared by the members of room <id>.
 * owner and editor (and member) may edit, viewer may only watch. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "conn.h"
#include "store.h"
#include "util/sbuf.h"
#include "util/utf8.h"
#include "util/xmalloc.h"
#include "validate.h"

#define HISTORY_LIMIT 50
#define RECOVERY_LIMIT 10000
#define OPERATION_MAX 100

/* The document (= room) id part of the topic. */
static const char *doc_id(const struct chan *ch)
{
    return ch->topic + strlen(document_channel.prefix);
}

/* The access level a membership role gives. */
static const char *access_level(const char *role)
{
    if (!strcmp(role, "owner"))
        return "owner";
    if (!strcmp(role, "viewer"))
        return "viewer";
    return "editor"; /* editor, member */
}

/* History item adapters for chan_push_history. */
static void append_op(struct sbuf *out, const void *item)
{
    store_docop_append_json(out, item);
}
static int64_t op_seq(const void *item)
{
    return ((const struct store_docop *)item)->seq;
}

/* Join read finished: reply {access_level, last_seq}, push the operations. */
static void join_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!chan_join_read_ok(ch, req))
        return;
    ch->role = xstrdup(access_level(req->member.role));
    struct sbuf b = SBUF_INIT;
    sbuf_adds(&b, "{\"access_level\":");
    sbuf_add_json_str(&b, ch->role, strlen(ch->role));
    sbuf_printf(&b, ",\"last_seq\":%lld}", (long long)req->room.doc_last_seq);
    chan_join_ok(ch, b.data);
    sbuf_cleanup(&b);
    chan_push_history(ch, req, "document_operations", "operations", req->docops,
                      req->n_docops, sizeof *req->docops, append_op, op_seq,
                      req->room.doc_last_seq);
}

/* phx_join on document:<id>; {"last_seq": N} replays what was missed. */
static void document_join(struct chan *ch, json_t *params)
{
    if (!validate_room_id(doc_id(ch))) {
        chan_join_error(ch, "not_found");
        return;
    }
    struct store_req *req = store_req_create(STORE_DOC_JOIN);
    req->room_id = xstrdup(doc_id(ch));
    req->user_id = xstrdup(ch->conn->user_id);
    chan_history_bounds(params, req, HISTORY_LIMIT, RECOVERY_LIMIT);
    chan_store(ch, req, NULL, join_done);
}

/* The edit was committed (its document_updated broadcast follows). */
static void edit_done(struct chan *ch, struct store_req *req, const char *ref)
{
    if (!ch)
        return;
    if (req->rc) {
        chan_reply_error(ch, ref, req->rc == RC_ENOTFOUND ? "not_found" : "unavailable");
        return;
    }
    struct sbuf b = SBUF_INIT;
    sbuf_printf(&b, "{\"seq\":%lld}", (long long)req->docop.seq);
    chan_reply(ch, ref, "ok", b.data);
    sbuf_cleanup(&b);
}

/* edit {operation, data}. */
static void document_handle_in(struct chan *ch, const char *event, const struct phx_in *m,
                               const char *ref)
{
    if (m->binary || strcmp(event, "edit")) {
        chan_reply_error(ch, ref, "unknown_event");
        return;
    }
    if (!strcmp(ch->role, "viewer")) {
        chan_reply_error(ch, ref, "insufficient_permissions");
        return;
    }
    json_t *op = json_is_object(m->payload) ? json_object_get(m->payload, "operation") : NULL;
    if (!json_is_string(op) || json_string_length(op) == 0 ||
        strlen(json_string_value(op)) != json_string_length(op) ||
        utf8_count(json_string_value(op), json_string_length(op)) > OPERATION_MAX) {
        chan_reply_error(ch, ref, "invalid_operation");
        return;
    }
    json_t *data = json_object_get(m->payload, "data");
    struct store_req *req = store_req_create(STORE_DOC_EDIT);
    req->room_id = xstrdup(doc_id(ch));
    req->user_id = xstrdup(ch->conn->user_id);
    req->name = xstrdup(json_string_value(op));
    req->data = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : xstrdup("null");
    chan_store(ch, req, ref, edit_done);
}


const struct channel_type document_channel = {
    .prefix = "document:",
    .join = document_join,
    .handle_in = document_handle_in,
    .accept = chan_accept_seq,
    .terminate = NULL,
};

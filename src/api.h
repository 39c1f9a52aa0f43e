/* api.h - the REST API: routes, validation, JSON in and out. Called by http.c on a
 * libmicrohttpd thread with the whole request body. Requests that need the database
 * return a store request; http.c submits it, suspends the connection, and calls
 * api_finish with the completed request. */
#ifndef RC_API_H
#define RC_API_H

#include <stdbool.h>
#include <stddef.h>

struct store_req;
struct config;
struct bus;

struct api_response {
    int status;
    char *body;               /* malloc'd text, NULL for no body */
    const char *content_type; /* NULL: application/json */
};

struct api_request {
    const char *method;
    const char *path;
    const char *body;
    size_t body_len;
    const char *authorization; /* Authorization header or NULL */
    /* query parameter lookup; returns NULL when absent */
    const char *(*query)(void *arg, const char *name);
    void *query_arg;
};

/* Handles a request. Either fills *resp (returns false), or returns true with
 * *pending set to a store request that the caller submits; the response then comes
 * from api_finish. Never blocks. */
bool api_handle(const struct config *cfg, struct bus *bus, const struct api_request *req,
                struct api_response *resp, struct store_req **pending);

/* Builds the response for a completed store request made by api_handle. */
void api_finish(struct bus *bus, const struct store_req *sreq, struct api_response *resp);

/* Fills resp with the JSON error {"error":{"code","message"}}. */
void api_error(struct api_response *resp, int status, const char *code, const char *message);

#endif

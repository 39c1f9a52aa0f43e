/* test_socket.c - the socket front's checks that need no HTTP request: token
 * verification (socket_authenticate) and the origin check (socket_origin_allowed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "jwt.h"
#include "socket.h"
#include "util/clock.h"

static const char secret[] = "test-secret";

/* A config with the test secret, env and origin list. */
static struct config make_cfg(const char *env, const char *origins)
{
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.jwt_secret = (char *)secret;
    cfg.env = (char *)env;
    cfg.check_origin = (char *)origins;
    return cfg;
}

/* A token for sub signed with key, expiring exp_in seconds from now. */
static char *token(const char *key, const char *sub, int64_t exp_in)
{
    char *t = NULL;
    int64_t now = clock_unix();
    assert_int_equal(jwt_sign((const uint8_t *)key, strlen(key), sub, now - 10, now + exp_in, &t),
                     0);
    return t;
}

/* A good token yields its sub; an expired, wrongly signed, empty or malformed one
 * yields nothing. */
static void authenticate(void **state)
{
    struct config cfg = make_cfg("dev", "");
    char *t = token(secret, "alice", 60);
    int64_t exp = 0;
    char *user = socket_authenticate(&cfg, t, &exp);
    assert_non_null(user);
    assert_string_equal(user, "alice");
    assert_true(exp >= clock_unix() + 59 && exp <= clock_unix() + 61);
    free(user);
    free(t);

    t = token(secret, "alice", -5);
    assert_null(socket_authenticate(&cfg, t, NULL));
    free(t);
    t = token("another-secret", "alice", 60);
    assert_null(socket_authenticate(&cfg, t, NULL));
    t[strlen(t) - 2] ^= 1; /* and a corrupted signature */
    assert_null(socket_authenticate(&cfg, t, NULL));
    free(t);
    assert_null(socket_authenticate(&cfg, NULL, NULL));
    assert_null(socket_authenticate(&cfg, "", NULL));
    assert_null(socket_authenticate(&cfg, "not.a.jwt", NULL));
    assert_null(socket_authenticate(&cfg, "abc", NULL));
}

/* A token whose sub is not a valid user id is refused. */
static void authenticate_bad_sub(void **state)
{
    struct config cfg = make_cfg("dev", "");
    char *t = token(secret, "bad\001user", 60);
    assert_null(socket_authenticate(&cfg, t, NULL));
    free(t);
}

/* No Origin header is always allowed; with no list, dev allows any origin and prod only
 * the request's own host. */
static void origin_default(void **state)
{
    struct config dev = make_cfg("dev", ""), prod = make_cfg("prod", "");
    assert_true(socket_origin_allowed(&dev, NULL, "example.com"));
    assert_true(socket_origin_allowed(&prod, NULL, NULL));
    assert_true(socket_origin_allowed(&dev, "https://evil.test", "example.com"));
    assert_true(socket_origin_allowed(&prod, "https://example.com", "example.com:4000"));
    assert_true(socket_origin_allowed(&prod, "http://EXAMPLE.com:8080", "example.com"));
    assert_false(socket_origin_allowed(&prod, "https://evil.test", "example.com"));
    assert_false(socket_origin_allowed(&prod, "https://example.com.evil", "example.com"));
    assert_false(socket_origin_allowed(&prod, "https://example.com", NULL));
}

/* A list of hosts, scheme://host[:port] entries and *.domain wildcards. */
static void origin_list(void **state)
{
    struct config cfg = make_cfg("prod", "app.example.com, https://other.test:8443,*.corp.test");
    assert_true(socket_origin_allowed(&cfg, "https://app.example.com", "x"));
    assert_true(socket_origin_allowed(&cfg, "http://APP.example.com:3000", "x"));
    assert_true(socket_origin_allowed(&cfg, "https://other.test", "x"));
    assert_true(socket_origin_allowed(&cfg, "https://corp.test", "x"));
    assert_true(socket_origin_allowed(&cfg, "https://a.b.corp.test", "x"));
    assert_false(socket_origin_allowed(&cfg, "https://example.com", "example.com"));
    assert_false(socket_origin_allowed(&cfg, "https://xcorp.test", "x"));
    assert_false(socket_origin_allowed(&cfg, "https://corp.test.evil", "x"));
    assert_false(socket_origin_allowed(&cfg, "https://evil-app.example.com", "x"));
    /* The list applies in dev too. */
    struct config dev = make_cfg("dev", "app.example.com");
    assert_false(socket_origin_allowed(&dev, "https://evil.test", "evil.test"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(authenticate),
        cmocka_unit_test(authenticate_bad_sub),
        cmocka_unit_test(origin_default),
        cmocka_unit_test(origin_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Chat sessions through C callbacks: tcpchat_conn_run_session in both roles
 * (two threads over loopback, every framing), tcpchat_server_serve_chat with
 * and without once, on_connect / on_end, custom end words, callbacks that
 * fail, peers that fail, and the log callback.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MAX_RECEIVED 8

/* In a script: end this session here, go on after it in the next one. */
static const char END[] = "<end of session>";

/* A scripted chat handler (the user_data of every callback below). */
struct script {
    const char *const *out; /* what to send; a NULL entry ends the session (BYE) */
    size_t next;
    char received[MAX_RECEIVED][128];
    size_t nreceived;
    int fail_next_at;    /* next_message call (1-based) that returns non-zero; 0 = never */
    int fail_message_at; /* on_message call that returns non-zero */
    int fail_connect;    /* on_connect returns non-zero */
    int fail_end;        /* on_end returns non-zero */
    int next_calls, message_calls;
    /* serve_chat hooks */
    int connects, ends;
    char peer[TCPCHAT_ADDR_MAX];
    tcpchat_status end_status;
    tcpchat_session_end end_kind;
    char end_error[256];
};

static int next_message(void *user_data, const uint8_t **msg, size_t *len)
{
    struct script *s = user_data;
    if (++s->next_calls == s->fail_next_at)
        return 7;
    const char *m = s->out[s->next];
    if (m == NULL || m == END) {
        if (m == END)
            s->next++; /* the next session goes on from there */
        *msg = NULL;   /* end the session: the library sends the end word */
        return 0;
    }
    s->next++;
    *msg = (const uint8_t *)m;
    *len = strlen(m);
    return 0;
}

static int on_message(void *user_data, const uint8_t *msg, size_t len)
{
    struct script *s = user_data;
    if (++s->message_calls == s->fail_message_at)
        return -1;
    if (s->nreceived < MAX_RECEIVED) {
        size_t n = len < 127 ? len : 127;
        memcpy(s->received[s->nreceived], msg, n); /* msg is valid only during the call */
        s->received[s->nreceived][n] = '\0';
        s->nreceived++;
    }
    return 0;
}

static int on_connect(void *user_data, const char *peer)
{
    struct script *s = user_data;
    s->connects++;
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    return s->fail_connect;
}

static int on_end(void *user_data, const char *peer, tcpchat_status status, tcpchat_session_end end)
{
    struct script *s = user_data;
    s->ends++;
    CHECK(strcmp(peer, s->peer) == 0);
    s->end_status = status;
    s->end_kind = end;
    snprintf(s->end_error, sizeof s->end_error, "%s", status ? tcpchat_last_error_message() : "");
    return s->fail_end;
}

static tcpchat_chat_callbacks callbacks_for(struct script *s)
{
    tcpchat_chat_callbacks cb = {s, next_message, on_message, on_connect, on_end};
    return cb;
}

static void script_init(struct script *s, const char *const *out)
{
    memset(s, 0, sizeof *s);
    s->out = out;
}

static bool received(const struct script *s, const char *const *want)
{
    size_t n = 0;
    while (want[n])
        n++;
    if (n != s->nreceived)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->received[i], want[i]) != 0)
            return false;
    return true;
}

/* One side of a session, run on a thread (or inline). */
struct side {
    tcpchat_conn *conn;
    tcpchat_role role;
    struct script script;
    tcpchat_status status;
    tcpchat_session_end end;
};

static void *run_side(void *arg)
{
    struct side *side = arg;
    tcpchat_chat_callbacks cb = callbacks_for(&side->script);
    side->end = (tcpchat_session_end)99;
    side->status = tcpchat_conn_run_session(side->conn, side->role, &cb, &side->end);
    /* Whatever happened, let the peer see our end. */
    tcpchat_conn_shutdown_write(side->conn);
    return NULL;
}

/* Run the two sides of a session on conn_pair's two ends, the server side on a thread. */
static bool run_pair(const tcpchat_config *c, struct side *srv, struct side *cli)
{
    if (!conn_pair(c, &cli->conn, &srv->conn))
        return false;
    srv->role = TCPCHAT_ROLE_SERVER;
    cli->role = TCPCHAT_ROLE_CLIENT;
    pthread_t t = spawn(run_side, srv);
    run_side(cli);
    pthread_join(t, NULL);
    pair_free(cli->conn, srv->conn);
    return true;
}

static void test_sessions_every_framing(void)
{
    static const char *const srv_out[] = {"hello", "how are you", NULL};
    static const char *const cli_out[] = {"hi", "fine", NULL};
    static const char *const srv_got[] = {"hi", "fine", NULL};
    static const char *const cli_got[] = {"hello", "how are you", NULL};
    const tcpchat_framing framings[] = {TCPCHAT_FRAMING_RAW, TCPCHAT_FRAMING_LINE, TCPCHAT_FRAMING_FRAME};
    for (int i = 0; i < 3; i++) {
        tcpchat_config *c = test_config(framings[i]);
        struct side srv, cli;
        script_init(&srv.script, srv_out);
        script_init(&cli.script, cli_out);
        if (run_pair(c, &srv, &cli)) {
            CHECK_OK(srv.status);
            CHECK_OK(cli.status);
            CHECK(srv.end == TCPCHAT_SESSION_END_LOCAL_END); /* the server's stdin ran out: BYE */
            CHECK(cli.end == TCPCHAT_SESSION_END_PEER_END);
            CHECK(received(&srv.script, srv_got));
            CHECK(received(&cli.script, cli_got));
            CHECK(srv.script.connects == 0 && srv.script.ends == 0); /* serve_chat only */
        }
        tcpchat_config_free(c);
    }
}

static void test_client_says_bye(void)
{
    static const char *const srv_out[] = {"hello", "never sent", NULL};
    static const char *const cli_out[] = {"BYE", NULL};
    static const char *const none[] = {NULL};
    static const char *const cli_got[] = {"hello", NULL};
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    struct side srv, cli;
    script_init(&srv.script, srv_out);
    script_init(&cli.script, cli_out);
    if (run_pair(c, &srv, &cli)) {
        CHECK_OK(srv.status);
        CHECK_OK(cli.status);
        CHECK(cli.end == TCPCHAT_SESSION_END_LOCAL_END);
        CHECK(srv.end == TCPCHAT_SESSION_END_PEER_END);
        CHECK(received(&srv.script, none)); /* the end word is not passed to on_message */
        CHECK(received(&cli.script, cli_got));
    }
    tcpchat_config_free(c);
}

static void test_custom_end_word(void)
{
    static const char *const srv_out[] = {"hello", NULL};
    static const char *const cli_out[] = {"BYE", NULL};
    static const char *const srv_got[] = {"BYE", NULL}; /* just a word now */
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_FRAME);
    CHECK_OK(tcpchat_config_set_end_word(c, (const uint8_t *)"STOP", 4));
    struct side srv, cli;
    script_init(&srv.script, srv_out);
    script_init(&cli.script, cli_out);
    if (run_pair(c, &srv, &cli)) {
        CHECK_OK(srv.status);
        CHECK_OK(cli.status);
        CHECK(srv.end == TCPCHAT_SESSION_END_LOCAL_END);
        CHECK(cli.end == TCPCHAT_SESSION_END_PEER_END);
        CHECK(received(&srv.script, srv_got));
    }
    tcpchat_config_free(c);
}

static void test_peer_closes(void)
{
    static const char *const srv_out[] = {"hello", "unused", NULL};
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    struct side srv;
    tcpchat_conn *cli;
    script_init(&srv.script, srv_out);
    srv.role = TCPCHAT_ROLE_SERVER;
    if (conn_pair(c, &cli, &srv.conn)) {
        pthread_t t = spawn(run_side, &srv);
        RECV_EXPECT(cli, "hello");
        CHECK_OK(tcpchat_conn_shutdown_write(cli)); /* leave without BYE */
        pthread_join(t, NULL);
        CHECK_OK(srv.status);
        CHECK(srv.end == TCPCHAT_SESSION_END_PEER_CLOSED);
        pair_free(cli, srv.conn);
    }
    tcpchat_config_free(c);
}

/* A callback returning non-zero ends the session with CALLBACK, no abort. */
static void test_failing_callbacks_in_session(void)
{
    static const char *const out[] = {"one", "two", "three", NULL};
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    struct side srv, cli;

    /* The client's on_message fails on the first message. */
    script_init(&srv.script, out);
    script_init(&cli.script, out);
    cli.script.fail_message_at = 1;
    if (run_pair(c, &srv, &cli)) {
        CHECK_ST(cli.status, TCPCHAT_STATUS_CALLBACK);
        CHECK_OK(srv.status);
        CHECK(srv.end == TCPCHAT_SESSION_END_PEER_CLOSED);
    }

    /* The server's next_message fails at once. */
    script_init(&srv.script, out);
    script_init(&cli.script, out);
    srv.script.fail_next_at = 1;
    if (run_pair(c, &srv, &cli)) {
        CHECK_ST(srv.status, TCPCHAT_STATUS_CALLBACK);
        CHECK_OK(cli.status);
        CHECK(cli.end == TCPCHAT_SESSION_END_PEER_CLOSED);
    }

    /* The client's next_message fails on its second turn. */
    script_init(&srv.script, out);
    script_init(&cli.script, out);
    cli.script.fail_next_at = 2;
    if (run_pair(c, &srv, &cli)) {
        CHECK_ST(cli.status, TCPCHAT_STATUS_CALLBACK);
        CHECK(cli.script.nreceived == 2);
        CHECK_OK(srv.status);
    }
    tcpchat_config_free(c);

    /* The message in the last error names the callback. */
    tcpchat_conn *a, *b;
    c = test_config(TCPCHAT_FRAMING_LINE);
    if (conn_pair(c, &a, &b)) {
        struct script s;
        script_init(&s, out);
        s.fail_next_at = 1;
        tcpchat_chat_callbacks cb = callbacks_for(&s);
        tcpchat_session_end end = (tcpchat_session_end)42;
        CHECK_ST(tcpchat_conn_run_session(a, TCPCHAT_ROLE_SERVER, &cb, &end), TCPCHAT_STATUS_CALLBACK);
        CHECK_ERR("next_message");
        CHECK((int)end == 42); /* out_end written only on success */
        CHECK_OK(send_str(b, "ping"));
        s.fail_message_at = 1;
        CHECK_ST(tcpchat_conn_run_session(a, TCPCHAT_ROLE_CLIENT, &cb, NULL), TCPCHAT_STATUS_CALLBACK);
        CHECK_ERR("on_message");
        pair_free(a, b);
    }
    tcpchat_config_free(c);
}

/* A callback calling back into its own connection is refused, not a deadlock. */
struct reentrant {
    tcpchat_conn *conn;
    int calls;
};

static int reentrant_next(void *user_data, const uint8_t **msg, size_t *len)
{
    struct reentrant *r = user_data;
    char addr[TCPCHAT_ADDR_MAX];
    uint8_t buf[8];
    size_t n;
    /* Reading the addresses needs neither side: allowed at any time. */
    CHECK_OK(tcpchat_conn_peer_addr(r->conn, addr, sizeof addr, NULL));
    CHECK_INVALID(send_str(r->conn, "nested"));
    CHECK_ERR("callback");
    CHECK_INVALID(tcpchat_conn_recv(r->conn, buf, sizeof buf, &n));
    CHECK_INVALID(tcpchat_conn_close(r->conn));
    *msg = r->calls++ == 0 ? (const uint8_t *)"from the callback" : NULL;
    *len = 17;
    return 0;
}

static int reentrant_message(void *user_data, const uint8_t *msg, size_t len)
{
    struct reentrant *r = user_data;
    CHECK_INVALID(tcpchat_conn_flush(r->conn));
    CHECK_MSG(msg, len, "reply");
    return 0;
}

static void test_callback_reentry(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    tcpchat_conn *a, *b;
    if (conn_pair(c, &a, &b)) {
        struct reentrant r = {a, 0};
        tcpchat_chat_callbacks cb = {&r, reentrant_next, reentrant_message, NULL, NULL};
        CHECK_OK(send_str(b, "reply")); /* the answer, ready before it is asked for */
        tcpchat_session_end end;
        CHECK_OK(tcpchat_conn_run_session(a, TCPCHAT_ROLE_SERVER, &cb, &end));
        CHECK(end == TCPCHAT_SESSION_END_LOCAL_END && r.calls == 2);
        RECV_EXPECT(b, "from the callback");
        RECV_EXPECT(b, "BYE");
        /* The connection is usable again once the session is over. */
        CHECK_OK(send_str(a, "after"));
        RECV_EXPECT(b, "after");
        pair_free(a, b);
    }
    tcpchat_config_free(c);
}

/* serve_chat on a thread; clients in the calling thread. */
struct serve {
    tcpchat_server *server;
    struct script script;
    bool once;
    tcpchat_status status;
    char error[256]; /* the serving thread's last error message after the loop */
};

static void *run_serve(void *arg)
{
    struct serve *sv = arg;
    tcpchat_chat_callbacks cb = callbacks_for(&sv->script);
    sv->status = tcpchat_server_serve_chat(sv->server, &cb, sv->once);
    snprintf(sv->error, sizeof sv->error, "%s", tcpchat_last_error_message());
    return NULL;
}

/* Connect a client to `port`, run its session, close. Returns the session status. */
static tcpchat_status client_session(const tcpchat_config *c, uint16_t port, struct script *s,
                                     char local[TCPCHAT_ADDR_MAX])
{
    tcpchat_conn *conn = NULL;
    if (!CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn)))
        return TCPCHAT_STATUS_INTERNAL;
    if (local)
        tcpchat_conn_local_addr(conn, local, TCPCHAT_ADDR_MAX, NULL);
    tcpchat_chat_callbacks cb = callbacks_for(s);
    tcpchat_status st = tcpchat_conn_run_session(conn, TCPCHAT_ROLE_CLIENT, &cb, NULL);
    tcpchat_conn_close(conn);
    tcpchat_conn_free(conn);
    return st;
}

static void test_serve_chat_once(void)
{
    static const char *const srv_out[] = {"welcome", NULL};
    static const char *const cli_out[] = {"thanks", NULL};
    static const char *const srv_got[] = {"thanks", NULL};
    static const char *const cli_got[] = {"welcome", NULL};
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    struct serve sv = {0};
    uint16_t port;
    sv.server = bind_any(c, &port);
    script_init(&sv.script, srv_out);
    sv.script.end_status = TCPCHAT_STATUS_INTERNAL;
    sv.once = true;
    pthread_t t = spawn(run_serve, &sv);

    struct script cli;
    script_init(&cli, cli_out);
    char local[TCPCHAT_ADDR_MAX] = "";
    CHECK_OK(client_session(c, port, &cli, local));
    pthread_join(t, NULL); /* once: returns after the one client */
    CHECK_OK(sv.status);
    CHECK(sv.script.connects == 1 && sv.script.ends == 1);
    CHECK(strcmp(sv.script.peer, local) == 0);
    CHECK_OK(sv.script.end_status);
    CHECK(sv.script.end_kind == TCPCHAT_SESSION_END_LOCAL_END);
    CHECK(received(&sv.script, srv_got));
    CHECK(received(&cli, cli_got));
    tcpchat_server_free(sv.server);
    tcpchat_config_free(c);
}

static void test_serve_chat_loop_until_shutdown(void)
{
    static const char *const srv_out[] = {"first", END, "second", NULL};
    static const char *const c1_out[] = {"c1", NULL};
    static const char *const c2_out[] = {"BYE", NULL};
    static const char *const srv_got[] = {"c1", NULL};
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_FRAME);
    struct serve sv = {0};
    uint16_t port;
    sv.server = bind_any(c, &port);
    script_init(&sv.script, srv_out);
    pthread_t t = spawn(run_serve, &sv);

    struct script c1, c2;
    script_init(&c1, c1_out);
    script_init(&c2, c2_out);
    CHECK_OK(client_session(c, port, &c1, NULL));
    CHECK_OK(client_session(c, port, &c2, NULL));
    CHECK(strcmp(c1.received[0], "first") == 0);
    CHECK(c2.nreceived == 1 && strcmp(c2.received[0], "second") == 0);
    CHECK_OK(tcpchat_server_shutdown(sv.server));
    pthread_join(t, NULL);
    CHECK_OK(sv.status);
    CHECK(sv.script.connects == 2 && sv.script.ends == 2);
    CHECK(sv.script.end_kind == TCPCHAT_SESSION_END_PEER_END); /* client 2 said BYE */
    CHECK(received(&sv.script, srv_got));
    tcpchat_server_free(sv.server);
    tcpchat_config_free(c);
}

/* serve_chat's own callbacks failing end the loop with CALLBACK. */
static void test_serve_chat_failing_callbacks(void)
{
    static const char *const srv_out[] = {"welcome", "more", NULL};
    static const char *const cli_out[] = {"a", "b", NULL};
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    for (int which = 0; which < 4; which++) {
        struct serve sv = {0};
        uint16_t port;
        sv.server = bind_any(c, &port);
        script_init(&sv.script, srv_out);
        if (which == 0)
            sv.script.fail_connect = 5;
        else if (which == 1)
            sv.script.fail_message_at = 1;
        else if (which == 2)
            sv.script.fail_next_at = 2;
        else
            sv.script.fail_end = 3; /* the session ends well; on_end stops the loop */
        sv.once = false; /* the failure, not once, must end the loop */
        pthread_t t = spawn(run_serve, &sv);
        struct script cli;
        script_init(&cli, cli_out);
        tcpchat_status st = client_session(c, port, &cli, NULL);
        /* The client sees the server go, cleanly or not. */
        CHECK(st == TCPCHAT_STATUS_OK || st == TCPCHAT_STATUS_CONNECTION_RESET || st == TCPCHAT_STATUS_CLOSED);
        pthread_join(t, NULL);
        CHECK_ST(sv.status, TCPCHAT_STATUS_CALLBACK);
        CHECK(sv.script.connects == 1);
        if (which == 0) {
            CHECK(sv.script.ends == 0); /* no session was started */
        } else if (which == 3) {
            CHECK(sv.script.ends == 1);
            CHECK_OK(sv.script.end_status);
            CHECK(strstr(sv.error, "on_end returned 3") != NULL);
        } else {
            CHECK(sv.script.ends == 1);
            CHECK_ST(sv.script.end_status, TCPCHAT_STATUS_CALLBACK);
            CHECK(strstr(sv.script.end_error, which == 1 ? "on_message" : "next_message") != NULL);
        }
        tcpchat_server_free(sv.server);
    }
    tcpchat_config_free(c);
}

/* A peer breaking the session is reported to on_end; the loop goes on. */
static void test_serve_chat_peer_failure(void)
{
    static const char *const srv_out[] = {"welcome", "again", NULL};
    static const char *const bad_out[] = {"this reply is longer than sixteen bytes", NULL};
    static const char *const good_out[] = {"ok", NULL};
    tcpchat_config *small = test_config(TCPCHAT_FRAMING_LINE);
    CHECK_OK(tcpchat_config_set_max_message_size(small, 16));
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    struct serve sv = {0};
    uint16_t port;
    sv.server = bind_any(small, &port);
    script_init(&sv.script, srv_out);
    pthread_t t = spawn(run_serve, &sv);

    struct script bad, good;
    script_init(&bad, bad_out);
    script_init(&good, good_out);
    tcpchat_status st = client_session(c, port, &bad, NULL);
    CHECK(st == TCPCHAT_STATUS_OK || st == TCPCHAT_STATUS_CONNECTION_RESET || st == TCPCHAT_STATUS_CLOSED);
    /* The server is still serving: the next client gets the next line. */
    CHECK_OK(client_session(c, port, &good, NULL));
    CHECK(good.nreceived == 1 && strcmp(good.received[0], "again") == 0);
    CHECK_OK(tcpchat_server_shutdown(sv.server));
    pthread_join(t, NULL);
    CHECK_OK(sv.status);
    CHECK(sv.script.connects == 2 && sv.script.ends == 2);
    CHECK_OK(sv.script.end_status); /* the last one ended well */
    tcpchat_server_free(sv.server);
    tcpchat_config_free(small);
    tcpchat_config_free(c);
}

/* A peer over the limit: on_end gets the status and can read the message. */
static void test_on_end_reports_failure(void)
{
    static const char *const srv_out[] = {"welcome", NULL};
    static const char *const bad_out[] = {"this reply is longer than sixteen bytes", NULL};
    tcpchat_config *small = test_config(TCPCHAT_FRAMING_LINE);
    CHECK_OK(tcpchat_config_set_max_message_size(small, 16));
    struct serve sv = {0};
    uint16_t port;
    sv.server = bind_any(small, &port);
    script_init(&sv.script, srv_out);
    sv.once = true;
    pthread_t t = spawn(run_serve, &sv);
    struct script bad;
    script_init(&bad, bad_out);
    client_session(NULL, port, &bad, NULL);
    pthread_join(t, NULL);
    CHECK_OK(sv.status); /* the peer's failure does not fail the loop */
    CHECK(sv.script.ends == 1);
    CHECK_ST(sv.script.end_status, TCPCHAT_STATUS_MESSAGE_TOO_LARGE);
    CHECK(strstr(sv.script.end_error, "16") != NULL);
    tcpchat_server_free(sv.server);
    tcpchat_config_free(small);
}

/* The log callback sees the library's records at the level it chose. */
struct log_sink {
    pthread_mutex_t mu;
    int records;
    int above_level;
    bool saw_accepted;
    tcpchat_log_level level;
};

static void log_record(void *user_data, tcpchat_log_level level, const char *message)
{
    struct log_sink *sink = user_data;
    pthread_mutex_lock(&sink->mu);
    sink->records++;
    if (level > sink->level || level == TCPCHAT_LOG_OFF)
        sink->above_level++;
    if (strstr(message, "accepted") != NULL)
        sink->saw_accepted = true;
    pthread_mutex_unlock(&sink->mu);
}

static void one_served_session(void)
{
    static const char *const srv_out[] = {"hi", NULL};
    static const char *const cli_out[] = {"hello", NULL};
    struct serve sv = {0};
    uint16_t port;
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    sv.server = bind_any(c, &port);
    script_init(&sv.script, srv_out);
    sv.once = true;
    pthread_t t = spawn(run_serve, &sv);
    struct script cli;
    script_init(&cli, cli_out);
    CHECK_OK(client_session(c, port, &cli, NULL));
    pthread_join(t, NULL);
    CHECK_OK(sv.status);
    tcpchat_server_free(sv.server);
    tcpchat_config_free(c);
}

static void test_log_callback(void)
{
    struct log_sink sink = {PTHREAD_MUTEX_INITIALIZER, 0, 0, false, TCPCHAT_LOG_INFO};
    CHECK_OK(tcpchat_set_log_callback(TCPCHAT_LOG_INFO, log_record, &sink));
    one_served_session();
    pthread_mutex_lock(&sink.mu);
    CHECK(sink.records > 0);
    CHECK(sink.saw_accepted);
    CHECK(sink.above_level == 0);
    pthread_mutex_unlock(&sink.mu);

    /* At ERROR level a good session logs nothing. */
    sink.records = 0;
    sink.level = TCPCHAT_LOG_ERROR;
    CHECK_OK(tcpchat_set_log_callback(TCPCHAT_LOG_ERROR, log_record, &sink));
    one_served_session();
    pthread_mutex_lock(&sink.mu);
    CHECK(sink.records == 0);
    pthread_mutex_unlock(&sink.mu);

    /* DEBUG sees at least what INFO sees; OFF sees nothing. */
    sink.level = TCPCHAT_LOG_DEBUG;
    CHECK_OK(tcpchat_set_log_callback(TCPCHAT_LOG_DEBUG, log_record, &sink));
    one_served_session();
    pthread_mutex_lock(&sink.mu);
    CHECK(sink.records > 0);
    pthread_mutex_unlock(&sink.mu);
    CHECK_OK(tcpchat_set_log_callback(TCPCHAT_LOG_OFF, NULL, NULL));
    sink.records = 0;
    one_served_session();
    CHECK(sink.records == 0);
    CHECK(sink.above_level == 0);
}

int main(void)
{
    test_sessions_every_framing();
    test_client_says_bye();
    test_custom_end_word();
    test_peer_closes();
    test_failing_callbacks_in_session();
    test_callback_reentry();
    test_serve_chat_once();
    test_serve_chat_loop_until_shutdown();
    test_serve_chat_failing_callbacks();
    test_serve_chat_peer_failure();
    test_on_end_reports_failure();
    test_log_callback();
    return finish();
}

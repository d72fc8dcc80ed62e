/*
 * Threads: cancelling a blocked receive or send from another thread, shutting
 * a server down under a blocked accept (and freeing it while that thread is
 * still returning), the echo service with several client threads, the
 * max_clients refusal, and per-thread last errors.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---- a call blocked on one thread, stopped from another ----------------- */

struct blocked {
    int tid;
    tcpchat_conn *conn;
    tcpchat_server *server;
    struct event started;
    tcpchat_status status;
    tcpchat_conn *accepted;
};

static void *blocked_recv(void *arg)
{
    struct blocked *b = arg;
    uint8_t buf[16];
    size_t n;
    b->tid = thread_id();
    event_set(&b->started);
    b->status = tcpchat_conn_recv(b->conn, buf, sizeof buf, &n);
    return NULL;
}

static void *blocked_send(void *arg)
{
    struct blocked *b = arg;
    size_t chunk = 256 * 1024;
    uint8_t *data = calloc(1, chunk);
    b->tid = thread_id();
    event_set(&b->started);
    /* Nobody reads the other end: the socket buffers fill, then the send blocks. */
    do
        b->status = tcpchat_conn_send(b->conn, data, chunk);
    while (b->status == TCPCHAT_STATUS_OK);
    free(data);
    return NULL;
}

static void *blocked_accept(void *arg)
{
    struct blocked *b = arg;
    b->tid = thread_id();
    event_set(&b->started);
    b->accepted = NULL;
    b->status = tcpchat_server_accept(b->server, &b->accepted);
    return NULL;
}

static void test_cancel_unblocks_recv_and_send(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_FRAME);
    CHECK_OK(tcpchat_config_set_write_timeout_ms(c, 0)); /* a send waits for ever */
    tcpchat_conn *a, *b, *x, *y;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    if (!conn_pair(c, &x, &y)) {
        pair_free(a, b);
        tcpchat_config_free(c);
        return;
    }
    /* b waits for a message that never comes; x sends to y, which never reads. */
    struct blocked r = {.conn = b}, s = {.conn = x};
    event_init(&r.started);
    event_init(&s.started);
    pthread_t tr = spawn(blocked_recv, &r);
    pthread_t ts = spawn(blocked_send, &s);
    event_wait(&r.started);
    event_wait(&s.started);
    /* Both are really blocked inside the library now. */
    CHECK(wait_until_blocked(r.tid));
    CHECK(wait_until_blocked(s.tid));
    CHECK_OK(tcpchat_conn_cancel(b));
    pthread_join(tr, NULL);
    CHECK_ST(r.status, TCPCHAT_STATUS_CANCELLED);
    CHECK_OK(tcpchat_conn_cancel(x));
    pthread_join(ts, NULL);
    CHECK_ST(s.status, TCPCHAT_STATUS_CANCELLED);
    /* Sticky: a later call that has to wait fails at once too. */
    uint8_t buf[4];
    size_t n;
    CHECK_ST(tcpchat_conn_recv(b, buf, sizeof buf, &n), TCPCHAT_STATUS_CANCELLED);
    CHECK_ST(tcpchat_conn_recv(x, buf, sizeof buf, &n), TCPCHAT_STATUS_CANCELLED);
    /* The peers were not cancelled. */
    CHECK_OK(send_str(b, "after cancel")); /* a send that need not wait still goes */
    RECV_EXPECT(a, "after cancel");
    event_destroy(&r.started);
    event_destroy(&s.started);
    pair_free(a, b);
    pair_free(x, y);
    tcpchat_config_free(c);
}

/* Free a connection while another thread is still inside a receive on it. */
static void test_free_conn_during_recv(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    for (int i = 0; i < 10; i++) {
        tcpchat_conn *a, *b;
        if (!conn_pair(c, &a, &b))
            break;
        struct blocked r = {.conn = b};
        event_init(&r.started);
        pthread_t t = spawn(blocked_recv, &r);
        event_wait(&r.started);
        if (!CHECK(wait_until_blocked(r.tid))) /* freeing before the call starts would be misuse */
            break;
        CHECK_OK(tcpchat_conn_cancel(b));
        tcpchat_conn_free(b); /* the receive may still be running: it keeps the connection alive */
        pthread_join(t, NULL);
        CHECK_ST(r.status, TCPCHAT_STATUS_CANCELLED);
        event_destroy(&r.started);
        tcpchat_conn_free(a);
    }
    tcpchat_config_free(c);
}

/* Shut a server down under a blocked accept, and free it at once, while the
 * accepting thread may still be returning. */
static void test_shutdown_and_free_during_accept(void)
{
    for (int i = 0; i < 20; i++) {
        struct blocked acc = {0};
        event_init(&acc.started);
        acc.server = bind_any(NULL, NULL);
        if (!acc.server)
            break;
        pthread_t t = spawn(blocked_accept, &acc);
        event_wait(&acc.started);
        if (!CHECK(wait_until_blocked(acc.tid))) /* freeing before the call starts would be misuse */
            break;
        CHECK_OK(tcpchat_server_shutdown(acc.server));
        CHECK_OK(tcpchat_server_shutdown(acc.server)); /* twice is fine */
        tcpchat_server_free(acc.server);
        pthread_join(t, NULL);
        CHECK_ST(acc.status, TCPCHAT_STATUS_CANCELLED);
        CHECK(acc.accepted == NULL);
        event_destroy(&acc.started);
    }
}

/* A server's shutdown also cancels the blocking calls of the connections it accepted. */
static void test_shutdown_cancels_accepted_conns(void)
{
    uint16_t port;
    tcpchat_server *s = bind_any(NULL, &port);
    tcpchat_conn *a = NULL, *b = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, NULL, &a));
    CHECK_OK(tcpchat_server_accept(s, &b));
    if (a && b) {
        struct blocked r = {.conn = b};
        event_init(&r.started);
        pthread_t t = spawn(blocked_recv, &r);
        event_wait(&r.started);
        CHECK(wait_until_blocked(r.tid));
        CHECK_OK(tcpchat_server_shutdown(s));
        pthread_join(t, NULL);
        CHECK_ST(r.status, TCPCHAT_STATUS_CANCELLED);
        event_destroy(&r.started);
        pair_free(a, b);
    }
    tcpchat_server_free(s);
}

/* ---- the echo service ---------------------------------------------------- */

struct echo_run {
    tcpchat_server *server;
    uint16_t port;
    tcpchat_status status;
    tcpchat_echo_stats stats;
};

static void *run_echo(void *arg)
{
    struct echo_run *e = arg;
    e->status = tcpchat_server_serve_echo(e->server, &e->stats);
    return NULL;
}

static void echo_start(struct echo_run *e, const tcpchat_config *c, pthread_t *t)
{
    memset(e, 0, sizeof *e);
    e->server = bind_any(c, &e->port);
    *t = spawn(run_echo, e);
}

static void echo_stop(struct echo_run *e, pthread_t t)
{
    CHECK_OK(tcpchat_server_shutdown(e->server));
    pthread_join(t, NULL);
    CHECK_OK(e->status);
    tcpchat_server_free(e->server);
}

#define ECHO_CLIENTS 4
#define ECHO_MESSAGES 25

struct echo_client {
    uint16_t port;
    const tcpchat_config *config;
    int id;
};

static void *echo_client(void *arg)
{
    struct echo_client *ec = arg;
    tcpchat_conn *conn = NULL;
    if (!CHECK_OK(tcpchat_conn_connect("127.0.0.1", ec->port, ec->config, &conn)))
        return NULL;
    char msg[64];
    for (int i = 0; i < ECHO_MESSAGES; i++) {
        snprintf(msg, sizeof msg, "client %d message %d", ec->id, i);
        CHECK_OK(send_str(conn, msg));
        RECV_EXPECT(conn, msg);
    }
    /* A batch, then a half close: every echo still comes back, then the end. */
    const uint8_t *batch[3] = {(const uint8_t *)"x", (const uint8_t *)"yy", (const uint8_t *)"zzz"};
    size_t lens[3] = {1, 2, 3};
    CHECK_OK(tcpchat_conn_send_many(conn, batch, lens, 3));
    CHECK_OK(tcpchat_conn_shutdown_write(conn));
    size_t got = 0;
    while (got < 3) {
        uint8_t buf[64];
        size_t glens[3], count = 0;
        if (!CHECK_OK(tcpchat_conn_recv_many(conn, buf, sizeof buf, glens, 3, &count)))
            break;
        size_t off = 0;
        for (size_t k = 0; k < count; k++, got++) {
            CHECK(glens[k] == got + 1 && memcmp(buf + off, batch[got], glens[k]) == 0);
            off += glens[k];
        }
    }
    uint8_t buf[8];
    size_t n;
    CHECK_ST(tcpchat_conn_recv(conn, buf, sizeof buf, &n), TCPCHAT_STATUS_CLOSED);
    tcpchat_conn_free(conn);
    return NULL;
}

static void test_echo_many_clients(void)
{
    const tcpchat_framing framings[] = {TCPCHAT_FRAMING_LINE, TCPCHAT_FRAMING_FRAME};
    for (int f = 0; f < 2; f++) {
        tcpchat_config *c = test_config(framings[f]);
        CHECK_OK(tcpchat_config_set_max_clients(c, 8));
        struct echo_run e;
        pthread_t et;
        echo_start(&e, c, &et);
        pthread_t t[ECHO_CLIENTS];
        struct echo_client ec[ECHO_CLIENTS];
        for (int i = 0; i < ECHO_CLIENTS; i++) {
            ec[i] = (struct echo_client){e.port, c, i};
            t[i] = spawn(echo_client, &ec[i]);
        }
        for (int i = 0; i < ECHO_CLIENTS; i++)
            pthread_join(t[i], NULL);
        echo_stop(&e, et);
        CHECK(e.stats.clients == ECHO_CLIENTS);
        CHECK(e.stats.refused == 0);
        CHECK(e.stats.messages == ECHO_CLIENTS * (ECHO_MESSAGES + 3));
        CHECK(e.stats.errors == 0);
        tcpchat_config_free(c);
    }

    /* Raw framing echoes bytes, however they are cut. */
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_RAW);
    struct echo_run e;
    pthread_t et;
    echo_start(&e, c, &et);
    tcpchat_conn *conn = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", e.port, c, &conn));
    const char *text = "raw bytes\nwith newlines\n and \0 all";
    size_t len = 35;
    CHECK_OK(tcpchat_conn_send(conn, (const uint8_t *)text, len));
    CHECK_OK(tcpchat_conn_shutdown_write(conn));
    char back[64];
    size_t got = 0, n = 0;
    while (got < sizeof back && tcpchat_conn_recv(conn, (uint8_t *)back + got, sizeof back - got, &n) == TCPCHAT_STATUS_OK)
        got += n;
    CHECK(got == len && memcmp(back, text, len) == 0);
    tcpchat_conn_free(conn);
    echo_stop(&e, et);
    CHECK(e.stats.clients == 1 && e.stats.errors == 0);
    tcpchat_config_free(c);
}

static void test_echo_max_clients(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    CHECK_OK(tcpchat_config_set_max_clients(c, 1));
    CHECK_INVALID(tcpchat_config_set_max_clients(c, 0)); /* refused: still 1 */
    struct echo_run e;
    pthread_t et;
    echo_start(&e, c, &et);

    tcpchat_conn *first = NULL, *second = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", e.port, c, &first));
    CHECK_OK(send_str(first, "am I served?"));
    RECV_EXPECT(first, "am I served?"); /* now the one slot is taken */

    CHECK_OK(tcpchat_conn_connect("127.0.0.1", e.port, c, &second));
    RECV_EXPECT(second, "error: server full (1 clients); try again later");
    uint8_t buf[8];
    size_t n;
    CHECK_ST(tcpchat_conn_recv(second, buf, sizeof buf, &n), TCPCHAT_STATUS_CLOSED);
    tcpchat_conn_free(second);

    /* The first client is still served. */
    CHECK_OK(send_str(first, "still here"));
    RECV_EXPECT(first, "still here");
    echo_stop(&e, et); /* closes the first client too */
    tcpchat_status st = tcpchat_conn_recv(first, buf, sizeof buf, &n);
    CHECK(st == TCPCHAT_STATUS_CLOSED || st == TCPCHAT_STATUS_CONNECTION_RESET);
    tcpchat_conn_free(first);
    CHECK(e.stats.clients == 1 && e.stats.refused == 1 && e.stats.messages == 2);
    tcpchat_config_free(c);
}

/* An idle client is closed after the idle timeout and counted as an error. */
static void test_echo_idle_timeout(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    CHECK_OK(tcpchat_config_set_idle_timeout_ms(c, 50));
    struct echo_run e;
    pthread_t et;
    echo_start(&e, c, &et);
    tcpchat_conn *conn = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", e.port, c, &conn));
    uint8_t buf[64];
    size_t n;
    tcpchat_status st = tcpchat_conn_recv(conn, buf, sizeof buf, &n); /* waits for the server to give up */
    CHECK(st == TCPCHAT_STATUS_CLOSED || st == TCPCHAT_STATUS_CONNECTION_RESET);
    tcpchat_conn_free(conn);
    echo_stop(&e, et);
    CHECK(e.stats.clients == 1 && e.stats.errors == 1);
    tcpchat_config_free(c);
}

/* ---- each thread has its own last error ---------------------------------- */

struct two_errors {
    struct event first_failed, second_failed;
    bool first_kept;
};

static void *fail_second(void *arg)
{
    struct two_errors *te = arg;
    event_wait(&te->first_failed);
    CHECK_INVALID(tcpchat_conn_connect("127.0.0.1", 70000, NULL, &(tcpchat_conn *){NULL}));
    CHECK_ERR("70000");
    event_set(&te->second_failed);
    return NULL;
}

static void test_last_error_per_thread(void)
{
    struct two_errors te;
    event_init(&te.first_failed);
    event_init(&te.second_failed);
    pthread_t t = spawn(fail_second, &te);
    CHECK_INVALID(tcpchat_conn_connect("127.0.0.1", -5, NULL, &(tcpchat_conn *){NULL}));
    event_set(&te.first_failed);
    event_wait(&te.second_failed);
    CHECK_ERR("-5"); /* not overwritten by the other thread's failure */
    pthread_join(t, NULL);
    event_destroy(&te.first_failed);
    event_destroy(&te.second_failed);
}

int main(void)
{
    test_cancel_unblocks_recv_and_send();
    test_free_conn_during_recv();
    test_shutdown_and_free_during_accept();
    test_shutdown_cancels_accepted_conns();
    test_echo_many_clients();
    test_echo_max_clients();
    test_echo_idle_timeout();
    test_last_error_per_thread();
    return finish();
}

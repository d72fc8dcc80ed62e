/*
 * SIGPIPE: this program keeps the default SIGPIPE action (terminate), as a C
 * program that knows nothing about it would. A peer resets the connection
 * (SO_LINGER 0 close on a raw POSIX socket), or closes and then gets data
 * (its kernel answers with a reset), and the library keeps sending: every
 * send must come back with an error status, never kill the process.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

/* Send until the library reports an error; the status, or OK if it never did. */
static tcpchat_status send_until_error(tcpchat_conn *conn)
{
    tcpchat_status st = TCPCHAT_STATUS_OK;
    for (int i = 0; i < 1000 && st == TCPCHAT_STATUS_OK; i++)
        st = send_str(conn, "are you still there?");
    return st;
}

static bool is_peer_gone(tcpchat_status st)
{
    return st == TCPCHAT_STATUS_CONNECTION_RESET || st == TCPCHAT_STATUS_CLOSED;
}

/* Every way of sending, after the peer has gone: an error each, no signal. */
static void send_every_way(tcpchat_conn *conn)
{
    tcpchat_status st = send_until_error(conn);
    CHECK(is_peer_gone(st));
    CHECK(tcpchat_last_error_message()[0] != '\0');
    for (int i = 0; i < 3; i++) {
        CHECK(send_str(conn, "again") != TCPCHAT_STATUS_OK);
        const uint8_t *msgs[2] = {(const uint8_t *)"a", (const uint8_t *)"b"};
        size_t lens[2] = {1, 1};
        CHECK(tcpchat_conn_send_many(conn, msgs, lens, 2) != TCPCHAT_STATUS_OK);
        CHECK(tcpchat_conn_send_packed(conn, (const uint8_t *)"ab", 2, lens, 2) != TCPCHAT_STATUS_OK);
        /* A broken connection refuses to queue; whatever was queued fails to flush. */
        if (tcpchat_conn_queue(conn, (const uint8_t *)"q", 1) == TCPCHAT_STATUS_OK)
            CHECK(tcpchat_conn_flush(conn) != TCPCHAT_STATUS_OK);
        else
            CHECK(is_peer_gone(tcpchat_conn_queue(conn, (const uint8_t *)"q", 1)));
    }
    tcpchat_conn_shutdown_write(conn);
    tcpchat_conn_close(conn); /* with data queued: still no signal */
}

/* The library connected to a raw peer that resets. */
static void test_reset_by_raw_server(tcpchat_framing framing)
{
    tcpchat_config *c = test_config(framing);
    uint16_t port;
    int listener = raw_listen(&port);
    tcpchat_conn *conn = NULL;
    if (listener >= 0 && CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn))) {
        int peer = raw_accept(listener);
        CHECK_OK(send_str(conn, "hello"));
        char got[6];
        CHECK(raw_read_exact(peer, got, framing == TCPCHAT_FRAMING_FRAME ? 4 : 5));
        raw_reset(peer);
        send_every_way(conn);
        tcpchat_conn_free(conn);
    }
    if (listener >= 0)
        close(listener);
    tcpchat_config_free(c);
}

/* A connection the library accepted, whose raw client resets. */
static void test_reset_by_raw_client(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    uint16_t port;
    tcpchat_server *s = bind_any(c, &port);
    int peer = raw_connect(port);
    tcpchat_conn *conn = NULL;
    if (peer >= 0 && CHECK_OK(tcpchat_server_accept(s, &conn))) {
        CHECK(raw_write_all(peer, "hi\n", 3));
        RECV_EXPECT(conn, "hi");
        raw_reset(peer);
        /* A receive sees the reset... */
        uint8_t buf[8];
        size_t n;
        tcpchat_status st = tcpchat_conn_recv(conn, buf, sizeof buf, &n);
        CHECK(is_peer_gone(st));
        /* ...and sends fail without a signal. */
        send_every_way(conn);
        tcpchat_conn_free(conn);
    }
    tcpchat_server_free(s);
    tcpchat_config_free(c);
}

/* The classic case: the peer closes normally, we keep writing; its kernel
 * resets, and the next write would raise SIGPIPE (EPIPE). */
static void test_write_after_peer_close(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_RAW);
    uint16_t port;
    int listener = raw_listen(&port);
    tcpchat_conn *conn = NULL;
    if (listener >= 0 && CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn))) {
        int peer = raw_accept(listener);
        close(peer);
        send_every_way(conn);
        tcpchat_conn_free(conn);
    }
    if (listener >= 0)
        close(listener);
    tcpchat_config_free(c);
}

/* A chat session whose peer resets mid-session ends with a status. */
static int say_hello(void *ud, const uint8_t **msg, size_t *len)
{
    (void)ud;
    *msg = (const uint8_t *)"hello";
    *len = 5;
    return 0;
}

static int ignore(void *ud, const uint8_t *msg, size_t len)
{
    (void)ud;
    (void)msg;
    (void)len;
    return 0;
}

static void test_session_with_reset_peer(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    uint16_t port;
    int listener = raw_listen(&port);
    tcpchat_conn *conn = NULL;
    if (listener >= 0 && CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn))) {
        int peer = raw_accept(listener);
        raw_reset(peer);
        tcpchat_chat_callbacks cb = {NULL, say_hello, ignore, NULL, NULL};
        tcpchat_session_end end = TCPCHAT_SESSION_END_LOCAL_END;
        tcpchat_status st = tcpchat_conn_run_session(conn, TCPCHAT_ROLE_SERVER, &cb, &end);
        /* Either the session notices the peer left, or it fails with the reset. */
        CHECK((st == TCPCHAT_STATUS_OK && end == TCPCHAT_SESSION_END_PEER_CLOSED) || is_peer_gone(st));
        tcpchat_conn_free(conn);
    }
    if (listener >= 0)
        close(listener);
    tcpchat_config_free(c);
}

int main(void)
{
    /* Make sure SIGPIPE has its default action and is not blocked, whatever
     * the parent process set up: the library alone must keep us alive. */
    signal(SIGPIPE, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    test_reset_by_raw_server(TCPCHAT_FRAMING_RAW);
    test_reset_by_raw_server(TCPCHAT_FRAMING_LINE);
    test_reset_by_raw_server(TCPCHAT_FRAMING_FRAME);
    test_reset_by_raw_client();
    test_write_after_peer_close();
    test_session_with_reset_peer();
    return finish();
}

/*
 * SIGPIPE: this program keeps the default SIGPIPE action (terminate), as a C
 * program that knows nothing about it would. A peer resets the connection
 * (SO_LINGER 0 close on a raw POSIX socket), or closes and then gets data
 * (its kernel answers with a reset), and the library keeps sending: every
 * send must come back with an error status, never kill the process.
 *
 * The services write too: the room (vectored writes of queued lines) and the
 * echo service, each run here on a thread of the program's own (where
 * SIGPIPE is not blocked, unlike on the library's threads), to clients that
 * vanish (a FIN, then a reset from closing with lines unread, or a reset
 * outright) while lines are written to them. The process must live through
 * hundreds of them.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
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
    /* The first call sees the reset or the peer's close; later ones find the
       connection closed by the library after that error. */
    return st == TCPCHAT_STATUS_CONNECTION_RESET || st == TCPCHAT_STATUS_CLOSED ||
           st == TCPCHAT_STATUS_LOCALLY_CLOSED;
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

/* Read whatever a raw socket has now, up to a while (a timeout bounds it). */
static void raw_read_some(int fd)
{
    char buf[4096];
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n;
    do
        n = recv(fd, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
}

/* Receive from `conn` until nothing is waiting; false if it broke. */
static bool drain_conn(tcpchat_conn *conn)
{
    uint8_t buf[1024];
    size_t n;
    for (;;) {
        tcpchat_status st = tcpchat_conn_try_recv(conn, buf, sizeof buf, &n);
        if (st == TCPCHAT_STATUS_WOULD_BLOCK)
            return true;
        if (st != TCPCHAT_STATUS_OK)
            return false;
    }
}

#define VANISHING 300

struct room_run {
    tcpchat_room *room;
    tcpchat_status status;
};

/* tcpchat_room_run on a thread of the program's, where SIGPIPE is not
 * blocked (the library's own threads block it). */
static void *run_room(void *arg)
{
    struct room_run *r = arg;
    r->status = tcpchat_room_run(r->room, NULL);
    return NULL;
}

/* A room whose members vanish while lines are written to them. */
static void test_room_with_vanishing_clients(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    tcpchat_room *room = NULL;
    uint16_t port = 0;
    char addr[TCPCHAT_ADDR_MAX];
    size_t addr_len = 0;
    const char *colon = NULL;
    if (!CHECK_OK(tcpchat_room_bind("127.0.0.1", 0, c, 0, &room)) ||
        !CHECK_OK(tcpchat_room_local_addr(room, addr, sizeof addr, &addr_len)) ||
        !CHECK((colon = strrchr(addr, ':')) != NULL)) {
        tcpchat_room_free(room);
        tcpchat_config_free(c);
        return;
    }
    struct room_run run = {room, TCPCHAT_STATUS_OK};
    pthread_t runner = spawn(run_room, &run);
    port = (uint16_t)atoi(colon + 1);
    tcpchat_conn *talker = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &talker));
    /* Batches of members that all leave at once, each sending its FIN and
     * then (closing with lines unread) a reset: the room learns of them in
     * one round, while the notices of the others' leaving are queued for
     * them, and writes to sockets whose peer has reset. */
    enum { BATCH = 50 };
    int fds[BATCH];
    for (int round = 0; round < VANISHING / BATCH && talker; round++) {
        int n = 0;
        for (; n < BATCH; n++) {
            fds[n] = raw_connect(port);
            if (fds[n] < 0)
                break;
            raw_read_some(fds[n]); /* the welcome: it is a member now */
        }
        /* A last line for them all, to be left unread. */
        int witness = raw_connect(port);
        if (witness >= 0)
            raw_read_some(witness);
        CHECK_OK(send_str(talker, "a line nobody will read"));
        if (witness >= 0)
            raw_read_some(witness);
        for (int i = 0; i < n; i++) {
            shutdown(fds[i], SHUT_WR);
            close(fds[i]); /* lines unread: the kernel resets */
        }
        if (witness >= 0)
            close(witness);
        if (!drain_conn(talker))
            break;
    }
    /* Still alive, and the room still serves a newcomer. */
    tcpchat_conn *late = NULL;
    if (CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &late))) {
        uint8_t buf[256];
        size_t n = 0;
        CHECK_OK(tcpchat_conn_recv(late, buf, sizeof buf, &n));
        CHECK(n > 10 && memcmp(buf, "* welcome,", 10) == 0);
        tcpchat_conn_free(late);
    }
    tcpchat_conn_free(talker);
    tcpchat_room_stats stats;
    CHECK_OK(tcpchat_room_get_stats(room, &stats));
    CHECK(stats.joined >= VANISHING);
    CHECK_OK(tcpchat_room_shutdown(room));
    pthread_join(runner, NULL);
    CHECK_OK(run.status);
    tcpchat_room_free(room);
    tcpchat_config_free(c);
}

struct echo_run {
    tcpchat_server *server;
    tcpchat_status status;
};

static void *serve_echo(void *arg)
{
    struct echo_run *e = arg;
    e->status = tcpchat_server_serve_echo(e->server, NULL);
    return NULL;
}

/* Echo clients that send a burst and vanish before reading the echo. */
static void test_echo_with_vanishing_clients(tcpchat_framing framing)
{
    tcpchat_config *c = test_config(framing);
    uint16_t port;
    struct echo_run e = {bind_any(c, &port), TCPCHAT_STATUS_OK};
    if (!e.server) {
        tcpchat_config_free(c);
        return;
    }
    pthread_t t = spawn(serve_echo, &e);
    static char burst[64 * 1024];
    for (size_t i = 0; i < sizeof burst; i++)
        burst[i] = (i % 64 == 63) ? '\n' : 'x';
    if (framing == TCPCHAT_FRAMING_FRAME) {
        /* One frame of the rest of the burst. */
        uint32_t len = (uint32_t)(sizeof burst - 4);
        burst[0] = (char)(len >> 24), burst[1] = (char)(len >> 16);
        burst[2] = (char)(len >> 8), burst[3] = (char)len;
    }
    for (int i = 0; i < VANISHING / 3; i++) {
        int fd = raw_connect(port);
        if (fd < 0)
            break;
        raw_write_all(fd, burst, sizeof burst);
        if (i % 2)
            raw_reset(fd);
        else
            close(fd);
    }
    tcpchat_conn *conn = NULL;
    if (CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn))) {
        CHECK_OK(send_str(conn, "still there?"));
        if (framing != TCPCHAT_FRAMING_RAW)
            RECV_EXPECT(conn, "still there?");
        tcpchat_conn_free(conn);
    }
    tcpchat_server_shutdown(e.server);
    pthread_join(t, NULL);
    CHECK_OK(e.status);
    tcpchat_server_free(e.server);
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
    test_room_with_vanishing_clients();
    test_echo_with_vanishing_clients(TCPCHAT_FRAMING_RAW);
    test_echo_with_vanishing_clients(TCPCHAT_FRAMING_LINE);
    test_echo_with_vanishing_clients(TCPCHAT_FRAMING_FRAME);
    return finish();
}

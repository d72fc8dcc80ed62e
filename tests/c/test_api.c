/*
 * The C API used as documented: version and status names, configuration,
 * every framing, receive-buffer rules, batches, limits, timeouts, addresses,
 * errors and their messages.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION='\"x.y.z\"' (tests/c/Makefile does, from Cargo.toml)"
#endif

static const tcpchat_framing FRAMINGS[] = {TCPCHAT_FRAMING_RAW, TCPCHAT_FRAMING_LINE, TCPCHAT_FRAMING_FRAME};

static void test_version(void)
{
    const char *v = tcpchat_version();
    CHECK(v != NULL && strcmp(v, EXPECTED_VERSION) == 0);
    CHECK(tcpchat_version() == v); /* static: the same pointer every time */
}

static void test_status_names(void)
{
    static const char *const names[] = {
        "TCPCHAT_STATUS_OK",          "TCPCHAT_STATUS_INVALID_ARGUMENT",   "TCPCHAT_STATUS_IO",
        "TCPCHAT_STATUS_TIMEOUT",     "TCPCHAT_STATUS_CLOSED",             "TCPCHAT_STATUS_MESSAGE_TOO_LARGE",
        "TCPCHAT_STATUS_PROTOCOL",    "TCPCHAT_STATUS_ADDRESS_IN_USE",     "TCPCHAT_STATUS_CONNECTION_REFUSED",
        "TCPCHAT_STATUS_RESOLVE",     "TCPCHAT_STATUS_CANCELLED",          "TCPCHAT_STATUS_INTERRUPTED",
        "TCPCHAT_STATUS_BUFFER_TOO_SMALL", "TCPCHAT_STATUS_CALLBACK",     "TCPCHAT_STATUS_SERVER_FULL",
        "TCPCHAT_STATUS_CONNECTION_RESET", "TCPCHAT_STATUS_INTERNAL",  "TCPCHAT_STATUS_WOULD_BLOCK",
        "TCPCHAT_STATUS_LOCALLY_CLOSED",
    };
    /* The documented, stable numbers. */
    static const tcpchat_status values[] = {
        TCPCHAT_STATUS_OK,          TCPCHAT_STATUS_INVALID_ARGUMENT,   TCPCHAT_STATUS_IO,
        TCPCHAT_STATUS_TIMEOUT,     TCPCHAT_STATUS_CLOSED,             TCPCHAT_STATUS_MESSAGE_TOO_LARGE,
        TCPCHAT_STATUS_PROTOCOL,    TCPCHAT_STATUS_ADDRESS_IN_USE,     TCPCHAT_STATUS_CONNECTION_REFUSED,
        TCPCHAT_STATUS_RESOLVE,     TCPCHAT_STATUS_CANCELLED,          TCPCHAT_STATUS_INTERRUPTED,
        TCPCHAT_STATUS_BUFFER_TOO_SMALL, TCPCHAT_STATUS_CALLBACK,     TCPCHAT_STATUS_SERVER_FULL,
        TCPCHAT_STATUS_CONNECTION_RESET, TCPCHAT_STATUS_INTERNAL,   TCPCHAT_STATUS_WOULD_BLOCK,
        TCPCHAT_STATUS_LOCALLY_CLOSED,
    };
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        CHECK((int)values[i] == i);
        CHECK(strcmp(tcpchat_status_name(i), names[i]) == 0);
    }
    CHECK(strcmp(tcpchat_status_name(19), "TCPCHAT_STATUS_UNKNOWN") == 0);
    CHECK(strcmp(tcpchat_status_name(-1), "TCPCHAT_STATUS_UNKNOWN") == 0);
    CHECK(strcmp(tcpchat_status_name(INT32_MAX), "TCPCHAT_STATUS_UNKNOWN") == 0);
    CHECK(strcmp(tcpchat_status_name(INT32_MIN), "TCPCHAT_STATUS_UNKNOWN") == 0);
    /* The other constants of the header. */
    CHECK(TCPCHAT_ADDR_MAX >= 48);
    CHECK(TCPCHAT_FRAMING_RAW == 0 && TCPCHAT_FRAMING_LINE == 1 && TCPCHAT_FRAMING_FRAME == 2);
    CHECK(TCPCHAT_ROLE_SERVER == 0 && TCPCHAT_ROLE_CLIENT == 1);
    CHECK(TCPCHAT_LOG_OFF == 0 && TCPCHAT_LOG_ERROR == 1 && TCPCHAT_LOG_WARN == 2 && TCPCHAT_LOG_INFO == 3 &&
          TCPCHAT_LOG_DEBUG == 4);
    CHECK(TCPCHAT_SESSION_END_LOCAL_END == 0 && TCPCHAT_SESSION_END_PEER_END == 1 &&
          TCPCHAT_SESSION_END_PEER_CLOSED == 2);
}

static void *last_error_in_fresh_thread(void *arg)
{
    (void)arg;
    const char *m = tcpchat_last_error_message();
    CHECK(m != NULL && m[0] == '\0'); /* nothing failed on this thread yet */
    CHECK_INVALID(tcpchat_config_set_backlog(NULL, 1));
    CHECK_ERR("config");
    return NULL;
}

static void test_last_error(void)
{
    pthread_t t = spawn(last_error_in_fresh_thread, NULL);
    pthread_join(t, NULL);
}

/* Every setter accepts its documented range and refuses what is outside,
 * leaving the config as it was. */
static void test_config_setters(void)
{
    tcpchat_config *c = tcpchat_config_new();
    CHECK(c != NULL);
    for (size_t i = 0; i < 3; i++)
        CHECK_OK(tcpchat_config_set_framing(c, FRAMINGS[i]));
    CHECK_INVALID(tcpchat_config_set_framing(c, 3));
    CHECK_ERR("framing");
    CHECK_INVALID(tcpchat_config_set_framing(c, UINT32_MAX));

    /* Not below the end word's length ("BYE" by default). */
    CHECK_INVALID(tcpchat_config_set_max_message_size(c, 1));
    CHECK_ERR("end_word");
    CHECK_OK(tcpchat_config_set_end_word(c, (const uint8_t *)"X", 1));
    CHECK_OK(tcpchat_config_set_max_message_size(c, 1));
    CHECK_OK(tcpchat_config_set_max_message_size(c, 4294967295u));
    CHECK_INVALID(tcpchat_config_set_max_message_size(c, 0));
    CHECK_ERR("max_message_size");
#if SIZE_MAX > 4294967295u
    CHECK_INVALID(tcpchat_config_set_max_message_size(c, (size_t)4294967295u + 1));
    CHECK_ERR("4294967296");
#endif
    CHECK_OK(tcpchat_config_set_max_message_size(c, 1 << 20));

    CHECK_OK(tcpchat_config_set_end_word(c, (const uint8_t *)"STOP", 4));
    CHECK_INVALID(tcpchat_config_set_end_word(c, (const uint8_t *)"", 0));
    CHECK_ERR("end_word");
    CHECK_INVALID(tcpchat_config_set_end_word(c, NULL, 0));
    CHECK_OK(tcpchat_config_set_framing(c, TCPCHAT_FRAMING_LINE));
    CHECK_INVALID(tcpchat_config_set_end_word(c, (const uint8_t *)"A\nB", 3));
    CHECK_ERR("newline");
    /* A newline is fine in frame framing, but then line framing is refused. */
    CHECK_OK(tcpchat_config_set_framing(c, TCPCHAT_FRAMING_FRAME));
    CHECK_OK(tcpchat_config_set_end_word(c, (const uint8_t *)"A\nB", 3));
    CHECK_INVALID(tcpchat_config_set_framing(c, TCPCHAT_FRAMING_LINE));
    CHECK_OK(tcpchat_config_set_end_word(c, (const uint8_t *)"BYE", 3));
    /* An end word longer than the maximum message size is refused either way round. */
    CHECK_OK(tcpchat_config_set_max_message_size(c, 3));
    CHECK_INVALID(tcpchat_config_set_end_word(c, (const uint8_t *)"GOODBYE", 7));
    CHECK_INVALID(tcpchat_config_set_max_message_size(c, 2));
    CHECK_OK(tcpchat_config_set_max_message_size(c, 1 << 20));

    const uint64_t timeouts[] = {0, 1, 1000, UINT64_MAX};
    for (size_t i = 0; i < 4; i++) {
        CHECK_OK(tcpchat_config_set_connect_timeout_ms(c, timeouts[i]));
        CHECK_OK(tcpchat_config_set_read_timeout_ms(c, timeouts[i]));
        CHECK_OK(tcpchat_config_set_write_timeout_ms(c, timeouts[i]));
        CHECK_OK(tcpchat_config_set_idle_timeout_ms(c, timeouts[i]));
        CHECK_OK(tcpchat_config_set_close_timeout_ms(c, timeouts[i]));
    }
    CHECK_OK(tcpchat_config_set_nodelay(c, false));
    CHECK_OK(tcpchat_config_set_nodelay(c, true));

    CHECK_OK(tcpchat_config_set_raw_buffer_size(c, 1));
    CHECK_OK(tcpchat_config_set_raw_buffer_size(c, 67108864));
    CHECK_INVALID(tcpchat_config_set_raw_buffer_size(c, 0));
    CHECK_ERR("raw_buffer_size");
    CHECK_INVALID(tcpchat_config_set_raw_buffer_size(c, 67108865));

    CHECK_OK(tcpchat_config_set_backlog(c, 1));
    CHECK_INVALID(tcpchat_config_set_backlog(c, 0));
    CHECK_ERR("backlog");
    CHECK_INVALID(tcpchat_config_set_backlog(c, UINT32_MAX));
    CHECK_OK(tcpchat_config_set_max_clients(c, 1));
    CHECK_INVALID(tcpchat_config_set_max_clients(c, 0));
    CHECK_ERR("max_clients");
    tcpchat_config_free(c);
}

/* A refused setting leaves the config as it was: observed on the wire. */
static void test_refused_setting_keeps_config(void)
{
    /* Framing: still frame after a refused value, as a raw peer sees. */
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_FRAME);
    CHECK_INVALID(tcpchat_config_set_framing(c, 7));
    uint16_t port;
    int listener = raw_listen(&port);
    tcpchat_conn *conn = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn));
    int peer = raw_accept(listener);
    CHECK_OK(send_str(conn, "abc"));
    char wire[7] = {0};
    CHECK(raw_read_exact(peer, wire, 7) && memcmp(wire, "\0\0\0\3abc", 7) == 0);
    /* And what the raw peer sends in frame framing arrives as one message. */
    CHECK(raw_write_all(peer, "\0\0\0\2hi", 6));
    RECV_EXPECT(conn, "hi");
    close(peer);
    close(listener);
    tcpchat_conn_free(conn);

    /* Maximum message size: still 16 after a refused 0. */
    CHECK_OK(tcpchat_config_set_max_message_size(c, 16));
    CHECK_INVALID(tcpchat_config_set_max_message_size(c, 0));
    tcpchat_conn *a, *b;
    if (conn_pair(c, &a, &b)) {
        CHECK_ST(send_str(a, "0123456789abcdefg"), TCPCHAT_STATUS_MESSAGE_TOO_LARGE);
        CHECK_ERR("17");
        CHECK_ERR("16");
        CHECK_OK(send_str(a, "0123456789abcdef"));
        RECV_EXPECT(b, "0123456789abcdef");
        pair_free(a, b);
    }
    tcpchat_config_free(c);

    /* Raw buffer size: one receive returns at most 4 bytes, still after a refused 0. */
    c = test_config(TCPCHAT_FRAMING_RAW);
    CHECK_OK(tcpchat_config_set_raw_buffer_size(c, 4));
    CHECK_INVALID(tcpchat_config_set_raw_buffer_size(c, 0));
    if (conn_pair(c, &a, &b)) {
        CHECK_OK(send_str(a, "abcdefgh"));
        RECV_EXPECT(b, "abcd");
        RECV_EXPECT(b, "efgh");
        pair_free(a, b);
    }
    tcpchat_config_free(c);
}

/* One message each way in every framing, including empty and binary ones. */
static void test_framings(void)
{
    for (size_t i = 0; i < 3; i++) {
        tcpchat_config *c = test_config(FRAMINGS[i]);
        tcpchat_conn *a, *b;
        if (!conn_pair(c, &a, &b)) {
            tcpchat_config_free(c);
            continue;
        }
        CHECK_OK(send_str(a, "hello"));
        RECV_EXPECT(b, "hello");
        CHECK_OK(send_str(b, "hi there"));
        RECV_EXPECT(a, "hi there");
        if (FRAMINGS[i] != TCPCHAT_FRAMING_RAW) {
            /* Empty messages exist in line and frame framing. */
            CHECK_OK(tcpchat_conn_send(a, NULL, 0));
            CHECK_OK(send_str(a, "after empty"));
            RECV_EXPECT(b, "");
            RECV_EXPECT(b, "after empty");
        }
        if (FRAMINGS[i] == TCPCHAT_FRAMING_FRAME) {
            /* Frames carry any bytes. */
            const uint8_t bin[] = {'a', 0, '\n', '\r', 0xff, 'z'};
            CHECK_OK(tcpchat_conn_send(a, bin, sizeof bin));
            uint8_t got[16];
            size_t n = 0;
            CHECK_OK(tcpchat_conn_recv(b, got, sizeof got, &n));
            CHECK(n == sizeof bin && memcmp(got, bin, n) == 0);
        }
        if (FRAMINGS[i] == TCPCHAT_FRAMING_LINE) {
            CHECK_INVALID(send_str(a, "two\nlines"));
            CHECK_ERR("newline");
            CHECK_OK(send_str(a, "still fine"));
            RECV_EXPECT(b, "still fine");
        }
        /* The peer's end: CLOSED with a zero length, again and again. */
        CHECK_OK(tcpchat_conn_shutdown_write(a));
        uint8_t buf[8];
        size_t n = 99;
        CHECK_ST(tcpchat_conn_recv(b, buf, sizeof buf, &n), TCPCHAT_STATUS_CLOSED);
        CHECK(n == 0);
        CHECK_ST(tcpchat_conn_recv(b, buf, sizeof buf, &n), TCPCHAT_STATUS_CLOSED);
        /* The other direction still works after a half close. */
        CHECK_OK(send_str(b, "reply after half close"));
        RECV_EXPECT(a, "reply after half close");
        CHECK_ST(send_str(a, "x"), TCPCHAT_STATUS_LOCALLY_CLOSED);
        pair_free(a, b);
        tcpchat_config_free(c);
    }

    /* Line framing strips "\r\n" and "\n" from what a raw peer sends. */
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    uint16_t port;
    int listener = raw_listen(&port);
    tcpchat_conn *conn = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn));
    int peer = raw_accept(listener);
    CHECK(raw_write_all(peer, "dos\r\nunix\n\nlast", 15));
    RECV_EXPECT(conn, "dos");
    RECV_EXPECT(conn, "unix");
    RECV_EXPECT(conn, "");
    /* "last" has no newline yet: it is not a message until one comes. */
    CHECK_OK(tcpchat_conn_set_read_timeout_ms(conn, 20));
    uint8_t buf[16];
    size_t n;
    CHECK_ST(tcpchat_conn_recv(conn, buf, sizeof buf, &n), TCPCHAT_STATUS_TIMEOUT);
    CHECK(raw_write_all(peer, " one\n", 5));
    RECV_EXPECT(conn, "last one");
    /* A peer closing in the middle of a frame breaks frame framing; in
     * line framing an unterminated last line is still a message or an error,
     * never a crash. */
    CHECK(raw_write_all(peer, "tail", 4));
    close(peer);
    tcpchat_status st = tcpchat_conn_recv(conn, buf, sizeof buf, &n);
    CHECK(st == TCPCHAT_STATUS_OK || st == TCPCHAT_STATUS_PROTOCOL || st == TCPCHAT_STATUS_CLOSED);
    close(listener);
    tcpchat_conn_free(conn);
    tcpchat_config_free(c);

    /* Frame framing: a frame cut short at the end of the stream is a protocol error. */
    c = test_config(TCPCHAT_FRAMING_FRAME);
    listener = raw_listen(&port);
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn));
    peer = raw_accept(listener);
    CHECK(raw_write_all(peer, "\0\0\0\10abc", 7));
    close(peer);
    CHECK_ST(tcpchat_conn_recv(conn, buf, sizeof buf, &n), TCPCHAT_STATUS_PROTOCOL);
    close(listener);
    tcpchat_conn_free(conn);
    tcpchat_config_free(c);
}

/* A buffer too small leaves the message queued and reports its size. */
static void test_buffer_too_small(void)
{
    for (size_t i = 1; i < 3; i++) { /* line and frame */
        tcpchat_config *c = test_config(FRAMINGS[i]);
        tcpchat_conn *a, *b;
        if (!conn_pair(c, &a, &b)) {
            tcpchat_config_free(c);
            continue;
        }
        char msg[101];
        memset(msg, 'x', 100);
        msg[100] = '\0';
        msg[99] = 'y';
        CHECK_OK(send_str(a, msg));
        CHECK_OK(send_str(a, "next"));
        uint8_t small[10];
        memset(small, 0xAA, sizeof small);
        size_t n = 0;
        CHECK_ST(tcpchat_conn_recv(b, small, sizeof small, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
        CHECK(n == 100);
        CHECK(small[0] == 0xAA && small[9] == 0xAA); /* nothing written */
        n = 0;
        CHECK_ST(tcpchat_conn_recv(b, NULL, 0, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
        CHECK(n == 100);
        uint8_t *big = malloc(n);
        size_t got = 0;
        CHECK_OK(tcpchat_conn_recv(b, big, n, &got));
        CHECK_MSG(big, got, msg);
        free(big);
        RECV_EXPECT(b, "next");
        pair_free(a, b);
        tcpchat_config_free(c);
    }
}

/* send_many, send_packed, queue + flush, recv_many. */
static void test_batches(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    const uint8_t *msgs[] = {(const uint8_t *)"one", (const uint8_t *)"two", (const uint8_t *)"three"};
    const size_t lens[] = {3, 3, 5};
    CHECK_OK(tcpchat_conn_send_many(a, msgs, lens, 3));

    /* recv_many: collect all three, however they arrive. */
    const char *want[] = {"one", "two", "three"};
    size_t seen = 0;
    while (seen < 3) {
        uint8_t buf[64];
        size_t got_lens[8], count = 0;
        if (!CHECK_OK(tcpchat_conn_recv_many(b, buf, sizeof buf, got_lens, 8, &count)))
            break;
        CHECK(count >= 1 && seen + count <= 3);
        size_t off = 0;
        for (size_t k = 0; k < count && seen < 3; k++, seen++) {
            CHECK_MSG(buf + off, got_lens[k], want[seen]);
            off += got_lens[k];
        }
    }

    /* send_packed, then recv_many with room for only part of the batch. */
    const size_t plens[] = {3, 3, 5, 0};
    CHECK_OK(tcpchat_conn_send_packed(a, (const uint8_t *)"onetwothree", 11, plens, 4));
    CHECK_OK(send_str(a, "end"));
    seen = 0;
    const char *pwant[] = {"one", "two", "three", "", "end"};
    while (seen < 5) {
        uint8_t buf[6]; /* "one"+"two" fit; "three" needs a call of its own */
        size_t got_lens[8], count = 0;
        if (!CHECK_OK(tcpchat_conn_recv_many(b, buf, sizeof buf, got_lens, 8, &count)))
            break;
        size_t off = 0, used = 0;
        for (size_t k = 0; k < count && seen < 5; k++, seen++) {
            CHECK_MSG(buf + off, got_lens[k], pwant[seen]);
            off += got_lens[k];
            used += got_lens[k];
        }
        CHECK(used <= sizeof buf);
    }

    /* recv_many with no room for the first message: BUFFER_TOO_SMALL, lens[0] = size, kept. */
    CHECK_OK(send_str(a, "a longer message"));
    uint8_t tiny[4];
    size_t tl[2] = {0, 0}, count = 99;
    CHECK_ST(tcpchat_conn_recv_many(b, tiny, sizeof tiny, tl, 2, &count), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
    CHECK(count == 0 && tl[0] == 16);
    RECV_EXPECT(b, "a longer message");

    /* All or nothing: one refused message sends none of the batch. */
    const uint8_t *bad[] = {(const uint8_t *)"fine", (const uint8_t *)"not\nfine"};
    const size_t bad_lens[] = {4, 8};
    CHECK_INVALID(tcpchat_conn_send_many(a, bad, bad_lens, 2));
    CHECK_ERR("1");
    const size_t bad_plens[] = {4, 8};
    CHECK_INVALID(tcpchat_conn_send_packed(a, (const uint8_t *)"finenot\nfine", 12, bad_plens, 2));
    const size_t wrong_sum[] = {4, 4};
    CHECK_INVALID(tcpchat_conn_send_packed(a, (const uint8_t *)"finefine!", 9, wrong_sum, 2));
    CHECK_ERR("data_len");
    CHECK_OK(tcpchat_conn_send_many(a, NULL, NULL, 0));            /* nothing to do */
    CHECK_OK(tcpchat_conn_send_packed(a, NULL, 0, NULL, 0));       /* nothing to do */

    /* queue + flush. */
    CHECK_OK(tcpchat_conn_queue(a, (const uint8_t *)"q1", 2));
    CHECK_OK(tcpchat_conn_queue(a, (const uint8_t *)"q2", 2));
    CHECK_INVALID(tcpchat_conn_queue(a, (const uint8_t *)"q\n3", 3));
    CHECK_OK(tcpchat_conn_flush(a));
    CHECK_OK(tcpchat_conn_flush(a)); /* nothing queued: fine */
    /* The first thing after the refused batches is q1: nothing else was sent. */
    RECV_EXPECT(b, "q1");
    RECV_EXPECT(b, "q2");
    pair_free(a, b);
    tcpchat_config_free(c);
}

/* Messages over the limit: refused on send, closing the connection on receive. */
static void test_oversize(void)
{
    tcpchat_config *def = test_config(TCPCHAT_FRAMING_FRAME);
    tcpchat_conn *a, *b;
    if (conn_pair(def, &a, &b)) {
        size_t max = 1 << 20;
        uint8_t *big = calloc(1, max + 1);
        CHECK_ST(tcpchat_conn_send(a, big, max + 1), TCPCHAT_STATUS_MESSAGE_TOO_LARGE);
        CHECK_ERR("1048577");
        CHECK_ERR("1048576");
        CHECK_OK(tcpchat_conn_send(a, big, max)); /* exactly the limit is fine */
        size_t n = 0;
        CHECK_OK(tcpchat_conn_recv(b, big, max + 1, &n));
        CHECK(n == max);
        free(big);
        pair_free(a, b);
    }
    tcpchat_config_free(def);

    /* A receiver with a 16-byte limit, a sender with the default. */
    for (size_t i = 1; i < 3; i++) {
        tcpchat_config *small = test_config(FRAMINGS[i]);
        tcpchat_config *sender = test_config(FRAMINGS[i]);
        CHECK_OK(tcpchat_config_set_max_message_size(small, 16));
        uint16_t port;
        tcpchat_server *s = bind_any(small, &port);
        tcpchat_conn *cli = NULL, *srv = NULL;
        CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, sender, &cli));
        CHECK_OK(tcpchat_server_accept(s, &srv));
        CHECK_OK(send_str(cli, "small"));
        CHECK_OK(send_str(cli, "this one is far too long for 16 bytes"));
        RECV_EXPECT(srv, "small");
        uint8_t buf[64];
        size_t n;
        CHECK_ST(tcpchat_conn_recv(srv, buf, sizeof buf, &n), TCPCHAT_STATUS_MESSAGE_TOO_LARGE);
        CHECK_ERR("16");
        /* The connection is closed now. */
        tcpchat_status st = tcpchat_conn_recv(srv, buf, sizeof buf, &n);
        CHECK(st != TCPCHAT_STATUS_OK);
        /* The sender sees the end too. */
        st = tcpchat_conn_recv(cli, buf, sizeof buf, &n);
        CHECK(st == TCPCHAT_STATUS_CLOSED || st == TCPCHAT_STATUS_CONNECTION_RESET);
        tcpchat_conn_free(cli);
        tcpchat_conn_free(srv);
        tcpchat_server_free(s);
        tcpchat_config_free(small);
        tcpchat_config_free(sender);
    }
}

/* Read timeouts leave the connection usable; accept and write timeouts. */
static void test_timeouts(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    CHECK_OK(tcpchat_config_set_read_timeout_ms(c, 30));
    uint16_t port;
    tcpchat_server *s = bind_any(c, &port);
    tcpchat_conn *conn = NULL;
    CHECK_ST(tcpchat_server_accept_timeout(s, 20, &conn), TCPCHAT_STATUS_TIMEOUT);
    CHECK(conn == NULL);
    tcpchat_conn *a = NULL, *b = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &a));
    CHECK_OK(tcpchat_server_accept_timeout(s, 5000, &b));
    tcpchat_server_free(s);
    if (a && b) {
        uint8_t buf[32];
        size_t n;
        /* From the config... */
        CHECK_ST(tcpchat_conn_recv(b, buf, sizeof buf, &n), TCPCHAT_STATUS_TIMEOUT);
        CHECK_ERR("timed out");
        CHECK_OK(send_str(a, "late"));
        RECV_EXPECT(b, "late");
        /* ...and per connection; a huge timeout is as good as none. */
        CHECK_OK(tcpchat_conn_set_read_timeout_ms(a, 10));
        CHECK_ST(tcpchat_conn_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_TIMEOUT);
        size_t lens[1], count = 99;
        CHECK_ST(tcpchat_conn_recv_many(a, buf, sizeof buf, lens, 1, &count), TCPCHAT_STATUS_TIMEOUT);
        CHECK_OK(send_str(b, "later"));
        CHECK_OK(tcpchat_conn_set_read_timeout_ms(a, UINT64_MAX));
        RECV_EXPECT(a, "later");
        CHECK_OK(tcpchat_conn_set_read_timeout_ms(a, 0));

        /* Write timeout: a peer that never reads makes sends time out. */
        CHECK_OK(tcpchat_conn_set_write_timeout_ms(a, 30));
        size_t chunk = 256 * 1024;
        uint8_t *data = malloc(chunk);
        memset(data, 'w', chunk);
        tcpchat_status st = TCPCHAT_STATUS_OK;
        for (int i = 0; i < 1000 && st == TCPCHAT_STATUS_OK; i++)
            st = tcpchat_conn_send(a, data, chunk);
        CHECK_ST(st, TCPCHAT_STATUS_TIMEOUT);
        free(data);
        tcpchat_conn_cancel(a); /* do not wait for the rest at close */
        pair_free(a, b);
    }
    tcpchat_config_free(c);
}

/* Connect refused, address in use: the message names the address. */
static void test_connect_and_bind_errors(void)
{
    uint16_t port;
    tcpchat_server *s = bind_any(NULL, &port);
    char addr[TCPCHAT_ADDR_MAX];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);

    tcpchat_server *twice = NULL;
    CHECK_ST(tcpchat_server_bind("127.0.0.1", port, NULL, &twice), TCPCHAT_STATUS_ADDRESS_IN_USE);
    CHECK_ERR(addr);
    CHECK(twice == NULL);
    tcpchat_server_free(s);

    /* Nothing listens there any more. */
    tcpchat_conn *conn = NULL;
    CHECK_ST(tcpchat_conn_connect("127.0.0.1", port, NULL, &conn), TCPCHAT_STATUS_CONNECTION_REFUSED);
    CHECK_ERR(addr);
    CHECK_ERR("refused");
    CHECK(conn == NULL);
}

/* Addresses: local and peer agree across a pair; too small a buffer. */
static void test_addresses(void)
{
    uint16_t port;
    tcpchat_server *s = bind_any(NULL, &port);
    char saddr[TCPCHAT_ADDR_MAX], want[TCPCHAT_ADDR_MAX];
    size_t n = 0;
    CHECK_OK(tcpchat_server_local_addr(s, saddr, sizeof saddr, &n));
    snprintf(want, sizeof want, "127.0.0.1:%u", (unsigned)port);
    CHECK(strcmp(saddr, want) == 0 && n == strlen(want));
    CHECK_OK(tcpchat_server_local_addr(s, saddr, sizeof saddr, NULL));

    char small[5];
    memset(small, 'Z', sizeof small);
    CHECK_ST(tcpchat_server_local_addr(s, small, sizeof small, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
    CHECK(n == strlen(want) + 1);
    CHECK(small[0] == 'Z');
    CHECK_ST(tcpchat_server_local_addr(s, NULL, 0, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
    CHECK(n == strlen(want) + 1);
    /* Exactly enough room. */
    char exact[32];
    CHECK_OK(tcpchat_server_local_addr(s, exact, strlen(want) + 1, &n));

    tcpchat_conn *a = NULL, *b = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, NULL, &a));
    CHECK_OK(tcpchat_server_accept(s, &b));
    if (a && b) {
        char a_local[TCPCHAT_ADDR_MAX], a_peer[TCPCHAT_ADDR_MAX], b_local[TCPCHAT_ADDR_MAX],
            b_peer[TCPCHAT_ADDR_MAX];
        CHECK_OK(tcpchat_conn_local_addr(a, a_local, sizeof a_local, NULL));
        CHECK_OK(tcpchat_conn_peer_addr(a, a_peer, sizeof a_peer, &n));
        CHECK(n == strlen(a_peer));
        CHECK_OK(tcpchat_conn_local_addr(b, b_local, sizeof b_local, NULL));
        CHECK_OK(tcpchat_conn_peer_addr(b, b_peer, sizeof b_peer, NULL));
        CHECK(strcmp(a_peer, want) == 0 && strcmp(b_local, want) == 0);
        CHECK(strcmp(a_local, b_peer) == 0 && strncmp(a_local, "127.0.0.1:", 10) == 0);
        CHECK_ST(tcpchat_conn_peer_addr(a, small, 3, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
        CHECK(n == strlen(a_peer) + 1);
        CHECK_ST(tcpchat_conn_local_addr(a, small, 3, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
        pair_free(a, b);
    }
    tcpchat_server_free(s);

    /* A host name resolves (every address is tried in turn). */
    s = bind_any(NULL, &port);
    a = NULL;
    CHECK_OK(tcpchat_conn_connect("localhost", port, NULL, &a));
    CHECK_OK(tcpchat_server_accept(s, &b));
    pair_free(a, b);
    tcpchat_server_free(s);

    /* IPv6 loopback, when the system has it. */
    tcpchat_server *s6 = NULL;
    if (tcpchat_server_bind("::1", 0, NULL, &s6) == TCPCHAT_STATUS_OK) {
        int32_t port6 = 0;
        CHECK_OK(tcpchat_server_local_port(s6, &port6));
        CHECK_OK(tcpchat_server_local_addr(s6, saddr, sizeof saddr, NULL));
        snprintf(want, sizeof want, "[::1]:%d", (int)port6);
        CHECK(strcmp(saddr, want) == 0);
        const char *hosts[] = {"::1", "[::1]"};
        for (int i = 0; i < 2; i++) {
            a = b = NULL;
            CHECK_OK(tcpchat_conn_connect(hosts[i], port6, NULL, &a));
            CHECK_OK(tcpchat_server_accept(s6, &b));
            char peer[TCPCHAT_ADDR_MAX];
            CHECK_OK(tcpchat_conn_peer_addr(a, peer, sizeof peer, NULL));
            CHECK(strcmp(peer, want) == 0);
            CHECK_OK(send_str(a, "over ipv6"));
            RECV_EXPECT(b, "over ipv6");
            pair_free(a, b);
        }
        tcpchat_server_free(s6);
    } else {
        printf("note: no IPv6 loopback here (%s); IPv6 checks skipped\n", tcpchat_last_error_message());
    }
}

/* Close: graceful (nothing lost), idempotent, and the handle stays valid. */
static void test_close(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    tcpchat_conn *a, *b;
    if (conn_pair(c, &a, &b)) {
        CHECK_OK(tcpchat_conn_queue(a, (const uint8_t *)"queued before close", 19));
        CHECK_OK(tcpchat_conn_shutdown_write(b)); /* so that a's close need not wait */
        CHECK_OK(tcpchat_conn_close(a));
        CHECK_OK(tcpchat_conn_close(a)); /* twice is harmless */
        RECV_EXPECT(b, "queued before close");
        uint8_t buf[8];
        size_t n;
        CHECK_ST(tcpchat_conn_recv(b, buf, sizeof buf, &n), TCPCHAT_STATUS_CLOSED);
        /* Calls on a closed handle fail cleanly. */
        CHECK_ST(send_str(a, "x"), TCPCHAT_STATUS_LOCALLY_CLOSED);
        CHECK_ST(tcpchat_conn_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_LOCALLY_CLOSED);
        CHECK_ST(tcpchat_conn_flush(a), TCPCHAT_STATUS_LOCALLY_CLOSED);
        char addr[TCPCHAT_ADDR_MAX];
        CHECK_ST(tcpchat_conn_peer_addr(a, addr, sizeof addr, NULL), TCPCHAT_STATUS_LOCALLY_CLOSED);
        CHECK_OK(tcpchat_conn_cancel(a));
        tcpchat_conn_free(a);
        tcpchat_conn_free(b);
    }
    tcpchat_config_free(c);
}

/* Allow and deny lists: a refused peer is closed at once and never
 * returned by accept; bad ranges are refused with a message. */
static void test_access_lists(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    CHECK_INVALID(tcpchat_config_set_allow(c, "10.0.0.0/99"));
    CHECK_ERR("10.0.0.0");
    CHECK_INVALID(tcpchat_config_set_deny(c, "not-an-address"));
    CHECK_INVALID(tcpchat_config_set_allow(c, NULL));
    CHECK_OK(tcpchat_config_set_max_per_address(c, 0));

    /* Denied: read end of stream, and accept times out. */
    CHECK_OK(tcpchat_config_set_deny(c, "127.0.0.0/8, ::1"));
    uint16_t port = 0;
    tcpchat_server *s = bind_any(c, &port);
    int fd = raw_connect(port);
    tcpchat_conn *accepted = NULL;
    CHECK_ST(tcpchat_server_accept_timeout(s, 300, &accepted), TCPCHAT_STATUS_TIMEOUT);
    CHECK(accepted == NULL);
    char byte;
    CHECK(read(fd, &byte, 1) <= 0);
    close(fd);
    tcpchat_server_free(s);

    /* Allowed, and deny lists something else: accepted. */
    CHECK_OK(tcpchat_config_set_deny(c, ""));
    CHECK_OK(tcpchat_config_set_allow(c, "127.0.0.1"));
    s = bind_any(c, &port);
    fd = raw_connect(port);
    CHECK_OK(tcpchat_server_accept_timeout(s, 10000, &accepted));
    CHECK(accepted != NULL);
    close(fd);
    tcpchat_conn_free(accepted);
    tcpchat_server_free(s);
    tcpchat_config_free(c);
}

static bool fd_readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1;
}

/* The pollable descriptors and the non-blocking calls. */
static void test_nonblocking(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    uint16_t port = 0;
    tcpchat_server *s = bind_any(c, &port);
    int sfd = -1;
    CHECK_OK(tcpchat_server_fd(s, &sfd));
    CHECK(sfd >= 0);
    tcpchat_conn *conn = NULL;
    CHECK_ST(tcpchat_server_try_accept(s, &conn), TCPCHAT_STATUS_WOULD_BLOCK);
    CHECK(!fd_readable(sfd, 0));
    int peer = raw_connect(port);
    CHECK(fd_readable(sfd, 10000));
    CHECK_OK(tcpchat_server_try_accept(s, &conn));

    int fd = -1;
    CHECK_OK(tcpchat_conn_fd(conn, &fd));
    CHECK(!fd_readable(fd, 0));
    uint8_t buf[16];
    size_t len = 99;
    CHECK_ST(tcpchat_conn_try_recv(conn, buf, sizeof buf, &len), TCPCHAT_STATUS_WOULD_BLOCK);
    CHECK_ERR("no complete message");
    CHECK(raw_write_all(peer, "one\ntwo\n", 8));
    CHECK(fd_readable(fd, 10000));
    CHECK_OK(tcpchat_conn_try_recv(conn, buf, sizeof buf, &len));
    CHECK_MSG(buf, len, "one");
    CHECK(fd_readable(fd, 0)); /* "two" is buffered in the library */
    CHECK_ST(tcpchat_conn_try_recv(conn, buf, 1, &len), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == 3);
    CHECK_OK(tcpchat_conn_try_recv(conn, buf, sizeof buf, &len));
    CHECK_MSG(buf, len, "two");
    CHECK(!fd_readable(fd, 0));

    CHECK_OK(tcpchat_conn_try_send(conn, (const uint8_t *)"hi", 2));
    CHECK_OK(tcpchat_conn_try_flush(conn));
    char got[3] = {0};
    CHECK(raw_read_exact(peer, got, 3) && memcmp(got, "hi\n", 3) == 0);
    CHECK_INVALID(tcpchat_conn_try_send(conn, (const uint8_t *)"a\nb", 3));
    CHECK_INVALID(tcpchat_conn_fd(conn, NULL));
    CHECK_INVALID(tcpchat_conn_fd(NULL, &fd));
    CHECK_INVALID(tcpchat_server_fd(NULL, &fd));
    CHECK_INVALID(tcpchat_server_try_accept(s, NULL));
    CHECK_INVALID(tcpchat_conn_try_recv(conn, NULL, 4, &len));

    shutdown(peer, SHUT_WR);
    CHECK(fd_readable(fd, 10000));
    CHECK_ST(tcpchat_conn_try_recv(conn, buf, sizeof buf, &len), TCPCHAT_STATUS_CLOSED);
    close(peer);
    tcpchat_conn_free(conn);
    tcpchat_server_free(s);
    tcpchat_config_free(c);
}

int main(void)
{
    test_version();
    test_status_names();
    test_last_error();
    test_config_setters();
    test_refused_setting_keeps_config();
    test_framings();
    test_buffer_too_small();
    test_batches();
    test_oversize();
    test_timeouts();
    test_connect_and_bind_errors();
    test_addresses();
    test_close();
    test_access_lists();
    test_nonblocking();
    return finish();
}

/*
 * Misuse of the C API: NULL everywhere, zero lengths, bad enum values, ports
 * out of range, host strings that are not UTF-8, operations repeated or done
 * in the wrong order. Every case must return a status (with a message), never
 * crash, and leave output parameters untouched.
 */
#define _POSIX_C_SOURCE 200809L

#include <string.h>

#include "check.h"

/* The last error is set and is not empty. */
#define CHECK_HAS_MESSAGE() CHECK(tcpchat_last_error_message()[0] != '\0')

static int next_msg(void *ud, const uint8_t **msg, size_t *len)
{
    (void)ud;
    *msg = NULL;
    *len = 0;
    return 0;
}

static int on_msg(void *ud, const uint8_t *msg, size_t len)
{
    (void)ud;
    (void)msg;
    (void)len;
    return 0;
}

static void log_cb(void *ud, tcpchat_log_level level, const char *msg)
{
    (void)ud;
    (void)level;
    (void)msg;
}

static void test_free_null(void)
{
    tcpchat_config_free(NULL);
    tcpchat_conn_free(NULL);
    tcpchat_server_free(NULL);
    tcpchat_room_free(NULL);
    CHECK(true); /* still alive */
}

static void test_global_functions(void)
{
    CHECK(tcpchat_version() != NULL);
    CHECK(tcpchat_last_error_message() != NULL);
    CHECK(strcmp(tcpchat_status_name(-12345), "TCPCHAT_STATUS_UNKNOWN") == 0);
    CHECK_INVALID(tcpchat_set_log_callback(5, log_cb, NULL));
    CHECK_ERR("5");
    CHECK_INVALID(tcpchat_set_log_callback(UINT32_MAX, NULL, NULL));
    /* NULL callback or level OFF: logging off, fine. */
    CHECK_OK(tcpchat_set_log_callback(TCPCHAT_LOG_INFO, NULL, NULL));
    CHECK_OK(tcpchat_set_log_callback(TCPCHAT_LOG_OFF, log_cb, NULL));
}

static void test_config_null(void)
{
    CHECK_INVALID(tcpchat_config_set_framing(NULL, TCPCHAT_FRAMING_LINE));
    CHECK_ERR("config");
    CHECK_INVALID(tcpchat_config_set_max_message_size(NULL, 100));
    CHECK_INVALID(tcpchat_config_set_end_word(NULL, (const uint8_t *)"BYE", 3));
    CHECK_INVALID(tcpchat_config_set_connect_timeout_ms(NULL, 1));
    CHECK_INVALID(tcpchat_config_set_read_timeout_ms(NULL, 1));
    CHECK_INVALID(tcpchat_config_set_write_timeout_ms(NULL, 1));
    CHECK_INVALID(tcpchat_config_set_idle_timeout_ms(NULL, 1));
    CHECK_INVALID(tcpchat_config_set_close_timeout_ms(NULL, 1));
    CHECK_INVALID(tcpchat_config_set_nodelay(NULL, true));
    CHECK_INVALID(tcpchat_config_set_raw_buffer_size(NULL, 1024));
    CHECK_INVALID(tcpchat_config_set_backlog(NULL, 1));
    CHECK_INVALID(tcpchat_config_set_max_clients(NULL, 1));

    tcpchat_config *c = tcpchat_config_new();
    CHECK_INVALID(tcpchat_config_set_end_word(c, NULL, 3));
    CHECK_ERR("NULL");
    CHECK_INVALID(tcpchat_config_set_end_word(c, NULL, 0)); /* empty */
    CHECK_INVALID(tcpchat_config_set_framing(c, 3));
    CHECK_INVALID(tcpchat_config_set_framing(c, (tcpchat_framing)-1));
    tcpchat_config_free(c);
}

static void test_connect_and_bind_arguments(void)
{
    tcpchat_conn *sentinel_conn = (tcpchat_conn *)&sentinel_conn; /* must stay untouched */
    tcpchat_conn *conn = sentinel_conn;
    CHECK_INVALID(tcpchat_conn_connect(NULL, 80, NULL, &conn));
    CHECK_ERR("host");
    CHECK_INVALID(tcpchat_conn_connect("127.0.0.1", 80, NULL, NULL));
    CHECK_ERR("out_conn");
    CHECK_INVALID(tcpchat_conn_connect("127.0.0.1", -1, NULL, &conn));
    CHECK_ERR("-1");
    CHECK_INVALID(tcpchat_conn_connect("127.0.0.1", 65536, NULL, &conn));
    CHECK_ERR("65536");
    CHECK_INVALID(tcpchat_conn_connect("127.0.0.1", INT32_MIN, NULL, &conn));
    CHECK_INVALID(tcpchat_conn_connect("127.0.0.1", 0, NULL, &conn)); /* no port 0 to connect to */
    CHECK_HAS_MESSAGE();
    CHECK_INVALID(tcpchat_conn_connect("\xff\xfe", 80, NULL, &conn));
    CHECK_ERR("UTF-8");
    CHECK_INVALID(tcpchat_conn_connect("127.0.0.\xc3", 80, NULL, &conn));
    CHECK(conn == sentinel_conn);

    tcpchat_server *sentinel_server = (tcpchat_server *)&sentinel_server;
    tcpchat_server *s = sentinel_server;
    CHECK_INVALID(tcpchat_server_bind(NULL, 0, NULL, &s));
    CHECK_ERR("host");
    CHECK_INVALID(tcpchat_server_bind("127.0.0.1", 0, NULL, NULL));
    CHECK_INVALID(tcpchat_server_bind("127.0.0.1", -1, NULL, &s));
    CHECK_ERR("-1");
    CHECK_INVALID(tcpchat_server_bind("127.0.0.1", 65536, NULL, &s));
    CHECK_ERR("65536");
    CHECK_INVALID(tcpchat_server_bind("\xff", 0, NULL, &s));
    CHECK_ERR("UTF-8");
    CHECK(s == sentinel_server);
    /* Empty host: an error status, never a crash. */
    CHECK(tcpchat_server_bind("", 0, NULL, &s) != TCPCHAT_STATUS_OK);
    CHECK(tcpchat_conn_connect("", 80, NULL, &conn) != TCPCHAT_STATUS_OK);
    CHECK(s == sentinel_server && conn == sentinel_conn);
}

static void test_conn_null(void)
{
    uint8_t buf[16];
    size_t n = 0, lens[2] = {0, 0}, count = 0;
    const uint8_t *msgs[1] = {buf};
    char addr[TCPCHAT_ADDR_MAX];
    tcpchat_chat_callbacks cb = {NULL, next_msg, on_msg, NULL, NULL};

    CHECK_INVALID(tcpchat_conn_send(NULL, buf, 1));
    CHECK_ERR("conn");
    CHECK_INVALID(tcpchat_conn_send(NULL, NULL, 0));
    CHECK_INVALID(tcpchat_conn_send_many(NULL, msgs, lens, 1));
    CHECK_INVALID(tcpchat_conn_send_many(NULL, NULL, NULL, 0));
    CHECK_INVALID(tcpchat_conn_send_packed(NULL, buf, 1, lens, 1));
    CHECK_INVALID(tcpchat_conn_send_packed(NULL, NULL, 0, NULL, 0));
    CHECK_INVALID(tcpchat_conn_queue(NULL, buf, 1));
    CHECK_INVALID(tcpchat_conn_flush(NULL));
    CHECK_INVALID(tcpchat_conn_recv(NULL, buf, sizeof buf, &n));
    CHECK_INVALID(tcpchat_conn_recv_many(NULL, buf, sizeof buf, lens, 2, &count));
    CHECK_INVALID(tcpchat_conn_set_read_timeout_ms(NULL, 1));
    CHECK_INVALID(tcpchat_conn_set_write_timeout_ms(NULL, 1));
    CHECK_INVALID(tcpchat_conn_peer_addr(NULL, addr, sizeof addr, &n));
    CHECK_INVALID(tcpchat_conn_local_addr(NULL, addr, sizeof addr, &n));
    CHECK_INVALID(tcpchat_conn_cancel(NULL));
    CHECK_INVALID(tcpchat_conn_shutdown_write(NULL));
    CHECK_INVALID(tcpchat_conn_run_session(NULL, TCPCHAT_ROLE_CLIENT, &cb, NULL));
    CHECK_INVALID(tcpchat_conn_close(NULL));
    CHECK_ERR("conn");
}

static void test_server_null(void)
{
    char addr[TCPCHAT_ADDR_MAX];
    size_t n;
    int32_t port = 7;
    tcpchat_conn *conn = NULL;
    tcpchat_echo_stats stats;
    tcpchat_chat_callbacks cb = {NULL, next_msg, on_msg, NULL, NULL};

    CHECK_INVALID(tcpchat_server_local_addr(NULL, addr, sizeof addr, &n));
    CHECK_ERR("server");
    CHECK_INVALID(tcpchat_server_local_port(NULL, &port));
    CHECK(port == 7);
    CHECK_INVALID(tcpchat_server_accept(NULL, &conn));
    CHECK_INVALID(tcpchat_server_accept_timeout(NULL, 10, &conn));
    CHECK_INVALID(tcpchat_server_shutdown(NULL));
    CHECK_INVALID(tcpchat_server_serve_chat(NULL, &cb, true));
    CHECK_INVALID(tcpchat_server_serve_echo(NULL, &stats));
    CHECK_INVALID(tcpchat_server_serve_echo(NULL, NULL));
    CHECK(conn == NULL);

    /* A real server with NULL pointers. */
    tcpchat_server *s = bind_any(NULL, NULL);
    CHECK_INVALID(tcpchat_server_local_addr(s, NULL, 10, &n));
    CHECK_INVALID(tcpchat_server_local_port(s, NULL));
    CHECK_INVALID(tcpchat_server_accept(s, NULL));
    CHECK_INVALID(tcpchat_server_accept_timeout(s, 10, NULL));
    CHECK_INVALID(tcpchat_server_serve_chat(s, NULL, true));
    CHECK_ERR("callbacks");
    tcpchat_chat_callbacks no_next = {NULL, NULL, on_msg, NULL, NULL};
    tcpchat_chat_callbacks no_msg = {NULL, next_msg, NULL, NULL, NULL};
    CHECK_INVALID(tcpchat_server_serve_chat(s, &no_next, true));
    CHECK_ERR("next_message");
    CHECK_INVALID(tcpchat_server_serve_chat(s, &no_msg, false));
    CHECK_ERR("on_message");

    /* Shutdown twice; then accept and the services return at once. */
    CHECK_OK(tcpchat_server_shutdown(s));
    CHECK_OK(tcpchat_server_shutdown(s));
    CHECK_ST(tcpchat_server_accept(s, &conn), TCPCHAT_STATUS_CANCELLED);
    CHECK_HAS_MESSAGE();
    CHECK_ST(tcpchat_server_accept_timeout(s, 1000, &conn), TCPCHAT_STATUS_CANCELLED);
    CHECK(conn == NULL);
    CHECK_OK(tcpchat_server_serve_chat(s, &cb, false));
    memset(&stats, 0xff, sizeof stats);
    CHECK_OK(tcpchat_server_serve_echo(s, &stats));
    CHECK(stats.clients == 0 && stats.refused == 0 && stats.messages == 0 && stats.errors == 0);
    CHECK_OK(tcpchat_server_serve_echo(s, NULL));
    /* The address can still be read after a shutdown. */
    CHECK_OK(tcpchat_server_local_port(s, &port));
    tcpchat_server_free(s);
}

static void test_room_null(void)
{
    char addr[TCPCHAT_ADDR_MAX];
    size_t n = 42;
    int32_t port = 7;
    tcpchat_room_stats stats;
    tcpchat_room *sentinel = (tcpchat_room *)&sentinel; /* must stay untouched */
    tcpchat_room *room = sentinel;

    CHECK_INVALID(tcpchat_room_bind(NULL, 0, NULL, 0, &room));
    CHECK_ERR("host");
    CHECK_INVALID(tcpchat_room_bind("127.0.0.1", 0, NULL, 0, NULL));
    CHECK_ERR("out_room");
    CHECK_INVALID(tcpchat_room_bind("127.0.0.1", -1, NULL, 0, &room));
    CHECK_ERR("-1");
    CHECK_INVALID(tcpchat_room_bind("127.0.0.1", 65536, NULL, 0, &room));
    CHECK_INVALID(tcpchat_room_bind("\xff", 0, NULL, 0, &room));
    CHECK_ERR("UTF-8");
    CHECK(room == sentinel);

    CHECK_INVALID(tcpchat_room_local_addr(NULL, addr, sizeof addr, &n));
    CHECK_ERR("room");
    CHECK_INVALID(tcpchat_room_local_port(NULL, &port));
    CHECK_INVALID(tcpchat_room_set_callback(NULL, NULL, NULL));
    CHECK_INVALID(tcpchat_room_run(NULL, &stats));
    CHECK_INVALID(tcpchat_room_run(NULL, NULL));
    CHECK_INVALID(tcpchat_room_start(NULL));
    CHECK_INVALID(tcpchat_room_post(NULL, "x"));
    CHECK_ERR("room");
    CHECK_INVALID(tcpchat_room_shutdown(NULL));
    CHECK_INVALID(tcpchat_room_get_stats(NULL, &stats));
    CHECK(n == 42 && port == 7);

    /* A real room with NULL pointers. */
    room = NULL;
    if (!CHECK_OK(tcpchat_room_bind("127.0.0.1", 0, NULL, 0, &room)))
        return;
    CHECK_INVALID(tcpchat_room_local_addr(room, NULL, 10, &n));
    CHECK_INVALID(tcpchat_room_local_port(room, NULL));
    CHECK_ERR("out_port");
    CHECK_INVALID(tcpchat_room_post(room, NULL));
    CHECK_ERR("text");
    CHECK_INVALID(tcpchat_room_get_stats(room, NULL));
    CHECK_ERR("out_stats");
    CHECK(n == 42);
    tcpchat_room_free(room);
}

/* A real connection with NULL and zero-length arguments. */
static void test_conn_arguments(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    uint8_t buf[16];
    size_t n = 42, lens[2] = {3, 3}, count = 42;
    const uint8_t *msgs[2] = {(const uint8_t *)"abc", NULL};
    char addr[TCPCHAT_ADDR_MAX];

    CHECK_INVALID(tcpchat_conn_send(a, NULL, 5));
    CHECK_ERR("msg");
    CHECK_INVALID(tcpchat_conn_send_many(a, NULL, lens, 2));
    CHECK_ERR("msgs");
    CHECK_INVALID(tcpchat_conn_send_many(a, msgs, NULL, 2));
    CHECK_ERR("lens");
    CHECK_INVALID(tcpchat_conn_send_many(a, msgs, lens, 2)); /* msgs[1] NULL with length 3 */
    CHECK_ERR("msgs[1]");
    CHECK_INVALID(tcpchat_conn_send_packed(a, NULL, 6, lens, 2));
    CHECK_INVALID(tcpchat_conn_send_packed(a, (const uint8_t *)"abcdef", 6, NULL, 2));
    CHECK_INVALID(tcpchat_conn_send_packed(a, (const uint8_t *)"abc", 3, NULL, 0)); /* 0 != 3 */
    size_t huge[2] = {SIZE_MAX, 4}; /* overflowing sum */
    CHECK_INVALID(tcpchat_conn_send_packed(a, (const uint8_t *)"abc", 3, huge, 2));
    CHECK_INVALID(tcpchat_conn_queue(a, NULL, 1));
    CHECK_INVALID(tcpchat_conn_recv(a, buf, sizeof buf, NULL));
    CHECK_ERR("out_len");
    CHECK_INVALID(tcpchat_conn_recv(a, NULL, 10, &n));
    CHECK_ERR("buf");
    CHECK_INVALID(tcpchat_conn_recv_many(a, buf, sizeof buf, lens, 2, NULL));
    CHECK_INVALID(tcpchat_conn_recv_many(a, buf, sizeof buf, NULL, 2, &count));
    CHECK_INVALID(tcpchat_conn_recv_many(a, buf, sizeof buf, lens, 0, &count));
    CHECK_INVALID(tcpchat_conn_recv_many(a, NULL, 10, lens, 2, &count));
    CHECK(n == 42 && count == 42); /* outputs untouched */
    CHECK_INVALID(tcpchat_conn_peer_addr(a, NULL, 10, &n));
    CHECK_INVALID(tcpchat_conn_local_addr(a, NULL, 10, &n));
    CHECK_ST(tcpchat_conn_peer_addr(a, NULL, 0, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
    CHECK_ST(tcpchat_conn_peer_addr(a, addr, 0, NULL), TCPCHAT_STATUS_BUFFER_TOO_SMALL);

    /* Sessions: bad role, NULL callbacks, NULL members. */
    tcpchat_chat_callbacks cb = {NULL, next_msg, on_msg, NULL, NULL};
    tcpchat_chat_callbacks no_next = {NULL, NULL, on_msg, NULL, NULL};
    tcpchat_chat_callbacks no_msg = {NULL, next_msg, NULL, NULL, NULL};
    CHECK_INVALID(tcpchat_conn_run_session(a, 2, &cb, NULL));
    CHECK_ERR("role");
    CHECK_INVALID(tcpchat_conn_run_session(a, UINT32_MAX, &cb, NULL));
    CHECK_INVALID(tcpchat_conn_run_session(a, TCPCHAT_ROLE_SERVER, NULL, NULL));
    CHECK_INVALID(tcpchat_conn_run_session(a, TCPCHAT_ROLE_SERVER, &no_next, NULL));
    CHECK_ERR("next_message");
    CHECK_INVALID(tcpchat_conn_run_session(a, TCPCHAT_ROLE_SERVER, &no_msg, NULL));
    CHECK_ERR("on_message");

    /* Zero lengths that are fine: empty messages and empty batches. */
    CHECK_OK(tcpchat_conn_send(a, NULL, 0));
    CHECK_OK(tcpchat_conn_send(a, buf, 0));
    CHECK_OK(tcpchat_conn_queue(a, NULL, 0));
    CHECK_OK(tcpchat_conn_flush(a));
    CHECK_OK(tcpchat_conn_send_many(a, NULL, NULL, 0));
    CHECK_OK(tcpchat_conn_send_packed(a, NULL, 0, NULL, 0));
    CHECK_OK(send_str(a, "marker"));
    RECV_EXPECT(b, "");
    RECV_EXPECT(b, "");
    RECV_EXPECT(b, "");
    /* cap 0 with a message waiting: BUFFER_TOO_SMALL and the size. */
    n = 0;
    CHECK_ST(tcpchat_conn_recv(b, NULL, 0, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
    CHECK(n == 6);
    RECV_EXPECT(b, "marker");
    /* Nothing else came: none of the refused calls sent anything. */
    CHECK_OK(tcpchat_conn_set_read_timeout_ms(b, 10));
    CHECK_ST(tcpchat_conn_recv(b, buf, sizeof buf, &n), TCPCHAT_STATUS_TIMEOUT);

    /* Repeated and out-of-order calls. */
    CHECK_OK(tcpchat_conn_shutdown_write(a));
    CHECK_OK(tcpchat_conn_shutdown_write(a));
    CHECK_ST(send_str(a, "x"), TCPCHAT_STATUS_LOCALLY_CLOSED);
    CHECK_OK(tcpchat_conn_cancel(a));
    CHECK_OK(tcpchat_conn_cancel(a));
    CHECK_ST(tcpchat_conn_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_CANCELLED);
    CHECK_ST(tcpchat_conn_run_session(a, TCPCHAT_ROLE_CLIENT, &cb, NULL), TCPCHAT_STATUS_CANCELLED);
    tcpchat_conn_close(a);
    CHECK_OK(tcpchat_conn_close(a));
    CHECK_ST(tcpchat_conn_set_read_timeout_ms(a, 5), TCPCHAT_STATUS_LOCALLY_CLOSED);
    CHECK_ST(tcpchat_conn_run_session(a, TCPCHAT_ROLE_CLIENT, &cb, NULL), TCPCHAT_STATUS_LOCALLY_CLOSED);
    tcpchat_conn_free(a);
    CHECK_OK(tcpchat_conn_close(b));
    tcpchat_conn_free(b);
    tcpchat_config_free(c);
}

/* A length over the message-size limit is refused before a byte of the
 * caller's buffer is read, in every framing, whatever the length: under ASan
 * or valgrind, reading past the 16-byte buffer would be reported, and a
 * length of 2^40 must not make the library abort on an allocation. */
static void test_lengths_over_the_limit_never_read_or_allocate(void)
{
    const tcpchat_framing framings[] = {TCPCHAT_FRAMING_RAW, TCPCHAT_FRAMING_LINE, TCPCHAT_FRAMING_FRAME};
    for (int f = 0; f < 3; f++) {
        tcpchat_config *c = test_config(framings[f]);
        CHECK_OK(tcpchat_config_set_max_message_size(c, 64));
        tcpchat_conn *a, *b;
        if (!conn_pair(c, &a, &b)) {
            tcpchat_config_free(c);
            return;
        }
        uint8_t small[16] = "0123456789abcde";
        const size_t lengths[] = {65, 4096, (size_t)1 << 40, SIZE_MAX / 2};
        for (int i = 0; i < 4; i++) {
            size_t len = lengths[i];
            CHECK_ST(tcpchat_conn_send(a, small, len), TCPCHAT_STATUS_MESSAGE_TOO_LARGE);
            CHECK_ST(tcpchat_conn_try_send(a, small, len), TCPCHAT_STATUS_MESSAGE_TOO_LARGE);
            CHECK_ST(tcpchat_conn_queue(a, small, len), TCPCHAT_STATUS_MESSAGE_TOO_LARGE);
            const uint8_t *msgs[1] = {small};
            CHECK_ST(tcpchat_conn_send_many(a, msgs, &len, 1), TCPCHAT_STATUS_MESSAGE_TOO_LARGE);
        }
        /* Nothing was sent: the next message is the first the peer sees. */
        CHECK_OK(tcpchat_conn_send(a, small, 5));
        uint8_t buf[64];
        size_t n = 0;
        CHECK_OK(tcpchat_conn_recv(b, buf, sizeof buf, &n));
        CHECK(n == 5 && memcmp(buf, "01234", 5) == 0);
        pair_free(a, b);
        tcpchat_config_free(c);
    }
}

int main(void)
{
    test_free_null();
    test_global_functions();
    test_config_null();
    test_connect_and_bind_arguments();
    test_conn_null();
    test_server_null();
    test_room_null();
    test_conn_arguments();
    test_lengths_over_the_limit_never_read_or_allocate();
    return finish();
}

/*
 * A peer that leaves while it is our turn (the operator still typing) ends
 * the session at once: tcpchat_session_wait_input() waits for the input and
 * the peer's departure together, and a next_message callback that returns
 * TCPCHAT_STATUS_CLOSED ends the session as PEER_CLOSED, not as a callback
 * failure. The "operator" is a pipe the test writes to, or never does.
 * Every wait is bounded or waits for an event; nothing sleeps.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define MAX_WAITS 16

/* The operator: each message is a line read from `input` after waiting
 * for it; counts the waits started and the sessions ended. */
struct operator {
    int input;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int waits_started, ends;
    int waiter_tid;
    tcpchat_status waits[MAX_WAITS]; /* what each wait gave */
    tcpchat_status end_status[MAX_WAITS];
    tcpchat_session_end end_kind[MAX_WAITS];
    char line[256];
    /* Return this from next_message at once instead (0: do not). */
    int return_at_once;
};

static void operator_init(struct operator *op, int input)
{
    memset(op, 0, sizeof *op);
    op->input = input;
    pthread_mutex_init(&op->mu, NULL);
    pthread_cond_init(&op->cv, NULL);
}

static void operator_destroy(struct operator *op)
{
    pthread_mutex_destroy(&op->mu);
    pthread_cond_destroy(&op->cv);
}

/* Wait until `*counter` reaches `n`; a test that waits 20 s for it has
 * failed, and the program stops there rather than hang. */
static void wait_count(struct operator *op, const int *counter, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&op->mu);
    while (*counter < n) {
        if (pthread_cond_timedwait(&op->cv, &op->mu, &until) != 0 && *counter < n) {
            pthread_mutex_unlock(&op->mu);
            CHECK(!"an event of the serving thread never came");
            finish();
            exit(1);
        }
    }
    pthread_mutex_unlock(&op->mu);
}

static int op_next(void *user_data, const uint8_t **msg, size_t *len)
{
    struct operator *op = user_data;
    if (op->return_at_once)
        return op->return_at_once;
    pthread_mutex_lock(&op->mu);
    int i = op->waits_started++;
    op->waiter_tid = thread_id();
    pthread_cond_broadcast(&op->cv);
    pthread_mutex_unlock(&op->mu);
    tcpchat_status st = tcpchat_session_wait_input(op->input);
    if (i < MAX_WAITS)
        op->waits[i] = st;
    if (st != TCPCHAT_STATUS_OK)
        return st; /* CLOSED, CANCELLED: passed on */
    ssize_t n = read(op->input, op->line, sizeof op->line);
    if (n <= 0) {
        *msg = NULL; /* the pipe's end: BYE */
        return 0;
    }
    if (op->line[n - 1] == '\n')
        n--;
    *msg = (const uint8_t *)op->line;
    *len = (size_t)n;
    return 0;
}

static int op_message(void *user_data, const uint8_t *msg, size_t len)
{
    (void)user_data;
    (void)msg;
    (void)len;
    return 0;
}

static int op_end(void *user_data, const char *peer, tcpchat_status status, tcpchat_session_end end)
{
    struct operator *op = user_data;
    (void)peer;
    pthread_mutex_lock(&op->mu);
    if (op->ends < MAX_WAITS) {
        op->end_status[op->ends] = status;
        op->end_kind[op->ends] = end;
    }
    op->ends++;
    pthread_cond_broadcast(&op->cv);
    pthread_mutex_unlock(&op->mu);
    return 0;
}

struct serving {
    tcpchat_server *server;
    struct operator *op;
    tcpchat_status status;
};

static void *serve(void *arg)
{
    struct serving *sv = arg;
    tcpchat_chat_callbacks cb = {sv->op, op_next, op_message, NULL, op_end};
    sv->status = tcpchat_server_serve_chat(sv->server, &cb, false);
    return NULL;
}

static void test_serve_chat_with_clients_that_leave_while_the_operator_types(void)
{
    int fds[2];
    if (!CHECK(pipe(fds) == 0))
        return;
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    uint16_t port;
    struct operator op;
    operator_init(&op, fds[0]);
    struct serving sv = {bind_any(c, &port), &op, TCPCHAT_STATUS_INTERNAL};
    if (!sv.server)
        return;
    pthread_t t = spawn(serve, &sv);

    /* 1: a client that closes while the operator has typed nothing. */
    int raw = raw_connect(port);
    CHECK(raw >= 0);
    wait_count(&op, &op.waits_started, 1);
    close(raw);
    wait_count(&op, &op.ends, 1);
    CHECK_ST(op.waits[0], TCPCHAT_STATUS_CLOSED);
    CHECK_OK(op.end_status[0]);
    CHECK(op.end_kind[0] == TCPCHAT_SESSION_END_PEER_CLOSED);

    /* 2: one that resets the connection, while the operator is blocked. */
    raw = raw_connect(port);
    CHECK(raw >= 0);
    wait_count(&op, &op.waits_started, 2);
    CHECK(wait_until_blocked(op.waiter_tid));
    raw_reset(raw);
    wait_count(&op, &op.ends, 2);
    CHECK_ST(op.waits[1], TCPCHAT_STATUS_CLOSED);
    CHECK_OK(op.end_status[1]);
    CHECK(op.end_kind[1] == TCPCHAT_SESSION_END_PEER_CLOSED);

    /* 3: the next client is served: the operator's line reaches it. */
    tcpchat_conn *conn = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn));
    wait_count(&op, &op.waits_started, 3);
    CHECK(write(fds[1], "typed\n", 6) == 6);
    RECV_EXPECT(conn, "typed");
    CHECK_OK(send_str(conn, "BYE"));
    CHECK_OK(tcpchat_conn_close(conn));
    tcpchat_conn_free(conn);
    wait_count(&op, &op.ends, 3);
    CHECK_OK(op.waits[2]);
    CHECK_OK(op.end_status[2]);
    CHECK(op.end_kind[2] == TCPCHAT_SESSION_END_PEER_END);

    /* 4: a shutdown while the operator types stops the loop cleanly. */
    conn = NULL;
    CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &conn));
    wait_count(&op, &op.waits_started, 4);
    CHECK(wait_until_blocked(op.waiter_tid));
    CHECK_OK(tcpchat_server_shutdown(sv.server));
    pthread_join(t, NULL);
    CHECK_OK(sv.status);
    CHECK_ST(op.waits[3], TCPCHAT_STATUS_CANCELLED);
    tcpchat_conn_shutdown_write(conn);
    tcpchat_conn_free(conn);

    tcpchat_server_free(sv.server);
    tcpchat_config_free(c);
    operator_destroy(&op);
    close(fds[0]);
    close(fds[1]);
}

/* One run_session on the server side of a pair with `op`; the client side
 * stays open. Returns the session's status, *end how it ended. */
static tcpchat_status session_with(struct operator *op, tcpchat_session_end *end)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    tcpchat_conn *client = NULL, *server_side = NULL;
    tcpchat_status st = TCPCHAT_STATUS_INTERNAL;
    if (conn_pair(c, &client, &server_side)) {
        tcpchat_chat_callbacks cb = {op, op_next, op_message, NULL, NULL};
        st = tcpchat_conn_run_session(server_side, TCPCHAT_ROLE_SERVER, &cb, end);
        pair_free(client, server_side);
    }
    tcpchat_config_free(c);
    return st;
}

static void test_statuses_that_do_not_hold_are_callback_failures(void)
{
    struct operator op;
    operator_init(&op, -1);
    tcpchat_session_end end;
    /* CLOSED while the peer is still connected. */
    op.return_at_once = TCPCHAT_STATUS_CLOSED;
    CHECK_ST(session_with(&op, &end), TCPCHAT_STATUS_CALLBACK);
    CHECK_ERR("has not closed");
    /* CANCELLED while nothing was cancelled. */
    op.return_at_once = TCPCHAT_STATUS_CANCELLED;
    CHECK_ST(session_with(&op, &end), TCPCHAT_STATUS_CALLBACK);
    CHECK_ERR("not cancelled");
    operator_destroy(&op);
}

static void test_bad_descriptors_and_calls_outside_a_session(void)
{
    /* Outside a session. */
    CHECK_INVALID(tcpchat_session_wait_input(STDIN_FILENO));
    CHECK_ERR("no chat session");
    /* Inside one, a descriptor that is not open: refused, the session ends
     * (this operator passes the status on as a failure). */
    struct operator op;
    operator_init(&op, -1);
    tcpchat_session_end end;
    CHECK_ST(session_with(&op, &end), TCPCHAT_STATUS_CALLBACK);
    CHECK_INVALID(op.waits[0]);
    operator_destroy(&op);
    /* And the session is forgotten once it is over. */
    CHECK_INVALID(tcpchat_session_wait_input(STDIN_FILENO));
}

int main(void)
{
    test_serve_chat_with_clients_that_leave_while_the_operator_types();
    test_statuses_that_do_not_hold_are_callback_failures();
    test_bad_descriptors_and_calls_outside_a_session();
    return finish();
}

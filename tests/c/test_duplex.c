/*
 * Full-duplex connections: one tcpchat_conn * used at once by a receiving
 * thread and a sending thread.
 *
 *  1. A million messages (fewer under valgrind, see stress_messages) go out
 *     on one pthread while another receives their echo from
 *     tcpchat_server_serve_echo on the same handle, in every framing: none
 *     lost, doubled or reordered (raw: the byte stream), no deadlock.
 *  2. try_recv while another thread's send is blocked on a peer that does
 *     not read returns at once; try_send/try_flush while another thread is
 *     blocked in recv return at once; try_* on a side another thread holds
 *     return WOULD_BLOCK at once.
 *  3. A blocked receive and a blocked send on one connection are both woken
 *     by tcpchat_conn_cancel (CANCELLED), by the server's shutdown for an
 *     accepted connection (CANCELLED), and by tcpchat_conn_close or
 *     tcpchat_conn_free from a third thread (CLOSED) -- which then closes
 *     gracefully, losing nothing.
 *  4. Two receivers (and two senders) at once are serialised, the second
 *     waiting at most its own timeout.
 *  5. The pollable descriptor stays level-triggered while another thread
 *     sends on the same connection.
 *
 * Every wait is bounded (a stuck thread fails the program instead of
 * hanging it); nothing sleeps to synchronise.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND_H 1
#endif
#endif

/* ---- bounded waits, time ------------------------------------------------- */

static bool valgrind;
/* The longest any one wait may take, in seconds. */
static int limit_s = 20;

static bool under_valgrind(void)
{
#ifdef HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND)
        return true;
#endif
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static struct timespec realtime_in(int seconds)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += seconds;
    return t;
}

/* A thread still blocked after the limit cannot be recovered: report and
 * end the program (a failure, not a hang). */
static void die_stuck(const char *what, const char *file, int line)
{
    fprintf(stderr, "%s:%d: FAILED: %s still blocked after %d s\n", file, line, what, limit_s);
    fflush(stderr);
    check_true(false, what, file, line);
    finish();
    _exit(1);
}

static void join_within(pthread_t t, const char *what, const char *file, int line)
{
    struct timespec until = realtime_in(limit_s);
    if (pthread_timedjoin_np(t, NULL, &until) != 0)
        die_stuck(what, file, line);
}
#define JOIN(t) join_within((t), "thread " #t, __FILE__, __LINE__)

static void event_wait_within(struct event *e, const char *what, const char *file, int line)
{
    struct timespec until = realtime_in(limit_s);
    pthread_mutex_lock(&e->mu);
    int r = 0;
    while (!e->set && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&e->cv, &e->mu, &until);
    bool set = e->set;
    pthread_mutex_unlock(&e->mu);
    if (!set)
        die_stuck(what, file, line);
}
#define EVENT_WAIT(e) event_wait_within((e), "waiting for " #e, __FILE__, __LINE__)

/* Wait (spinning on /proc, no sleep) until thread `tid` waits in a futex:
 * a call waiting behind another thread's call on the same side. */
static bool wait_until_in_futex(int tid)
{
#ifdef SYS_futex
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    double start = now_s();
    while (now_s() - start < limit_s) {
        FILE *f = fopen(path, "r");
        if (!f)
            return true; /* /proc says nothing here: go on the other evidence */
        long nr = -1;
        int got = fscanf(f, "%ld", &nr);
        fclose(f);
        if (got == 1 && nr == SYS_futex)
            return true;
        sched_yield();
    }
    fprintf(stderr, "thread %d never waited in a futex\n", tid);
    return false;
#else
    (void)tid;
    return true;
#endif
}

/* ---- messages ------------------------------------------------------------ */

/* Message i: its sequence number, then 0 to 10 filler bytes. */
static size_t message(uint64_t i, char *out)
{
    return (size_t)sprintf(out, "%07" PRIu64 "|%.*s", i, (int)(i % 11), "abcdefghij");
}

/* The expected raw byte stream, produced as it is compared. */
struct stream_gen {
    uint64_t next, n;
    char cur[32];
    size_t len, off;
};

/* Compare `len` received bytes with the stream; false at the first difference. */
static bool stream_match(struct stream_gen *g, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (g->off == g->len) {
            if (g->next == g->n)
                return false; /* more bytes than were sent */
            g->len = message(g->next++, g->cur);
            g->off = 0;
        }
        size_t k = g->len - g->off < len ? g->len - g->off : len;
        if (memcmp(g->cur + g->off, p, k) != 0)
            return false;
        g->off += k;
        p += k;
        len -= k;
    }
    return true;
}

static bool stream_done(const struct stream_gen *g)
{
    return g->next == g->n && g->off == g->len;
}

/* ---- the echo service ---------------------------------------------------- */

struct echo_run {
    tcpchat_server *server;
    uint16_t port;
    tcpchat_status status;
    tcpchat_echo_stats stats;
    pthread_t thread;
};

static void *run_echo(void *arg)
{
    struct echo_run *e = arg;
    e->status = tcpchat_server_serve_echo(e->server, &e->stats);
    return NULL;
}

static bool echo_start(struct echo_run *e, const tcpchat_config *c)
{
    memset(e, 0, sizeof *e);
    e->server = bind_any(c, &e->port);
    if (!e->server)
        return false;
    e->thread = spawn(run_echo, e);
    return true;
}

static void echo_stop(struct echo_run *e)
{
    CHECK_OK(tcpchat_server_shutdown(e->server));
    JOIN(e->thread);
    CHECK_OK(e->status);
    tcpchat_server_free(e->server);
}

/* ---- 1. a million messages each way at once ------------------------------ */

static uint64_t stress_messages(void)
{
    const char *env = getenv("TCPCHAT_DUPLEX_N");
    if (env && *env)
        return strtoull(env, NULL, 10);
    /* Valgrind runs the threads one at a time, some fifty times slower. */
    return valgrind ? 200000 : 1000000;
}

struct stress {
    tcpchat_conn *conn;
    tcpchat_framing framing;
    uint64_t n;
    /* set by the threads */
    uint64_t sent, received;
    tcpchat_status send_status, recv_status;
    char why[256];
};

#define BATCH 64

/* Sends the messages in blocks of BATCH, each block through one of the
 * sending calls in turn: send one by one, send_many, queue + flush,
 * send_packed. */
static void *stress_sender(void *arg)
{
    struct stress *s = arg;
    char text[BATCH][32];
    const uint8_t *ptrs[BATCH];
    size_t lens[BATCH];
    uint8_t packed[BATCH * 32];
    tcpchat_status st = TCPCHAT_STATUS_OK;
    for (uint64_t i = 0; i < s->n && st == TCPCHAT_STATUS_OK;) {
        size_t count = s->n - i < BATCH ? (size_t)(s->n - i) : BATCH;
        size_t total = 0;
        for (size_t k = 0; k < count; k++) {
            lens[k] = message(i + k, text[k]);
            ptrs[k] = (const uint8_t *)text[k];
            memcpy(packed + total, text[k], lens[k]);
            total += lens[k];
        }
        switch ((i / BATCH) % 4) {
        case 0:
            for (size_t k = 0; k < count && st == TCPCHAT_STATUS_OK; k++)
                st = tcpchat_conn_send(s->conn, ptrs[k], lens[k]);
            break;
        case 1:
            st = tcpchat_conn_send_many(s->conn, ptrs, lens, count);
            break;
        case 2:
            for (size_t k = 0; k < count && st == TCPCHAT_STATUS_OK; k++)
                st = tcpchat_conn_queue(s->conn, ptrs[k], lens[k]);
            if (st == TCPCHAT_STATUS_OK)
                st = tcpchat_conn_flush(s->conn);
            break;
        default:
            st = tcpchat_conn_send_packed(s->conn, packed, total, lens, count);
            break;
        }
        if (st == TCPCHAT_STATUS_OK)
            i += count, s->sent = i;
    }
    if (st == TCPCHAT_STATUS_OK)
        st = tcpchat_conn_shutdown_write(s->conn); /* the echo service then closes */
    s->send_status = st;
    if (st != TCPCHAT_STATUS_OK)
        fprintf(stderr, "stress sender: %s after %" PRIu64 " messages: %s\n", tcpchat_status_name(st), s->sent,
                tcpchat_last_error_message());
    return NULL;
}

/* Receives with recv and recv_many in turn until the end of the stream,
 * checking every message (raw: every byte). */
static void *stress_receiver(void *arg)
{
    struct stress *s = arg;
    uint8_t buf[64 * 1024];
    size_t lens[256];
    struct stream_gen gen = {.n = s->n};
    char want[32];
    bool raw = s->framing == TCPCHAT_FRAMING_RAW;
    tcpchat_status st;
    for (unsigned round = 0;; round++) {
        size_t count = 0;
        if (round % 2 == 0) {
            st = tcpchat_conn_recv(s->conn, buf, sizeof buf, &lens[0]);
            count = st == TCPCHAT_STATUS_OK ? 1 : 0;
        } else {
            st = tcpchat_conn_recv_many(s->conn, buf, sizeof buf, lens, 256, &count);
        }
        if (st != TCPCHAT_STATUS_OK)
            break;
        size_t off = 0;
        for (size_t k = 0; k < count; k++) {
            bool ok;
            if (raw) {
                ok = stream_match(&gen, buf + off, lens[k]);
            } else {
                size_t wl = s->received < s->n ? message(s->received, want) : 0;
                ok = s->received < s->n && lens[k] == wl && memcmp(buf + off, want, wl) == 0;
            }
            if (!ok) {
                snprintf(s->why, sizeof s->why, "%s %" PRIu64 " differs: got \"%.*s\"",
                         raw ? "the byte stream after message" : "message", raw ? gen.next : s->received,
                         (int)(lens[k] > 40 ? 40 : lens[k]), (const char *)buf + off);
                s->recv_status = TCPCHAT_STATUS_PROTOCOL;
                return NULL;
            }
            off += lens[k];
            s->received++;
        }
    }
    s->recv_status = st;
    if (st == TCPCHAT_STATUS_CLOSED && raw && !stream_done(&gen))
        snprintf(s->why, sizeof s->why, "the byte stream ended early, in message %" PRIu64, gen.next);
    else if (st == TCPCHAT_STATUS_CLOSED && !raw && s->received != s->n)
        snprintf(s->why, sizeof s->why, "%" PRIu64 " of %" PRIu64 " messages came back", s->received, s->n);
    else if (st != TCPCHAT_STATUS_CLOSED)
        snprintf(s->why, sizeof s->why, "recv: %s: %s", tcpchat_status_name(st), tcpchat_last_error_message());
    return NULL;
}

static void test_stress(tcpchat_framing framing, const char *name)
{
    tcpchat_config *c = test_config(framing);
    CHECK_OK(tcpchat_config_set_read_timeout_ms(c, (uint64_t)limit_s * 1000));
    CHECK_OK(tcpchat_config_set_write_timeout_ms(c, (uint64_t)limit_s * 1000));
    CHECK_OK(tcpchat_config_set_idle_timeout_ms(c, (uint64_t)limit_s * 1000));
    struct echo_run e;
    if (!echo_start(&e, c)) {
        tcpchat_config_free(c);
        return;
    }
    struct stress s = {.framing = framing, .n = stress_messages()};
    if (CHECK_OK(tcpchat_conn_connect("127.0.0.1", e.port, c, &s.conn))) {
        double t0 = now_s();
        pthread_t rt = spawn(stress_receiver, &s);
        pthread_t st = spawn(stress_sender, &s);
        JOIN(st);
        JOIN(rt);
        double took = now_s() - t0;
        CHECK_OK(s.send_status);
        CHECK(s.sent == s.n);
        if (!CHECK_ST(s.recv_status, TCPCHAT_STATUS_CLOSED) || s.why[0])
            fprintf(stderr, "%s: %s\n", name, s.why);
        CHECK(s.why[0] == 0);
        printf("stress %s: %" PRIu64 " messages sent and echoed back on one handle in %.2f s\n", name, s.n, took);
        fflush(stdout);
        CHECK_OK(tcpchat_conn_close(s.conn));
        tcpchat_conn_free(s.conn);
    }
    echo_stop(&e);
    if (framing != TCPCHAT_FRAMING_RAW)
        CHECK(e.stats.messages == s.n);
    CHECK(e.stats.clients == 1 && e.stats.errors == 0);
    tcpchat_config_free(c);
}

/* ---- calls blocked on other threads -------------------------------------- */

/* A 16 MiB message: more than the loopback socket buffers of a peer that
 * does not read hold, so a send of it blocks. */
#define BIG (16u << 20)

struct call {
    tcpchat_conn *conn;
    const uint8_t *data; /* send: the message */
    size_t len;
    int tid;
    struct event started;
    atomic_bool done;
    tcpchat_status status;
    double returned_at;
    char error[256];
    uint8_t buf[64];
};

static void call_init(struct call *k, tcpchat_conn *conn)
{
    memset(k, 0, sizeof *k);
    k->conn = conn;
    event_init(&k->started);
    atomic_init(&k->done, false);
}

static void call_returned(struct call *k, tcpchat_status st)
{
    k->returned_at = now_s();
    k->status = st;
    snprintf(k->error, sizeof k->error, "%s", st == TCPCHAT_STATUS_OK ? "" : tcpchat_last_error_message());
    atomic_store(&k->done, true);
}

static void *recv_call(void *arg)
{
    struct call *k = arg;
    k->tid = thread_id();
    event_set(&k->started);
    tcpchat_status st = tcpchat_conn_recv(k->conn, k->buf, sizeof k->buf, &k->len);
    call_returned(k, st);
    return NULL;
}

static void *send_call(void *arg)
{
    struct call *k = arg;
    k->tid = thread_id();
    event_set(&k->started);
    call_returned(k, tcpchat_conn_send(k->conn, k->data, k->len));
    return NULL;
}

/* Start `fn` on a thread and wait (bounded) until it is blocked in poll(). */
static pthread_t start_blocked(void *(*fn)(void *), struct call *k)
{
    pthread_t t = spawn(fn, k);
    EVENT_WAIT(&k->started);
    CHECK(wait_until_blocked(k->tid));
    return t;
}

static uint8_t *big_message(void)
{
    uint8_t *m = malloc(BIG);
    if (!m) {
        fprintf(stderr, "out of memory\n");
        exit(3);
    }
    for (size_t i = 0; i < BIG; i++)
        m[i] = (uint8_t)(i * 7);
    return m;
}

/* The peer reads the big message (whole and intact). */
static void peer_reads_big(tcpchat_conn *peer, const uint8_t *want)
{
    uint8_t *got = malloc(BIG);
    size_t n = 0;
    if (CHECK_OK(tcpchat_conn_recv(peer, got, BIG, &n)))
        CHECK(n == BIG && memcmp(got, want, BIG) == 0);
    free(got);
}

/* A frame-framing config that allows the big message; waits bounded. */
static tcpchat_config *big_config(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_FRAME);
    CHECK_OK(tcpchat_config_set_max_message_size(c, 2 * BIG));
    CHECK_OK(tcpchat_config_set_read_timeout_ms(c, (uint64_t)limit_s * 1000));
    CHECK_OK(tcpchat_config_set_write_timeout_ms(c, (uint64_t)limit_s * 1000));
    return c;
}

#define AT_ONCE 0.5 /* seconds: loose, for a noisy machine */

/* ---- 2. the try_* calls never wait ----------------------------------------- */

static void test_try_recv_while_a_send_is_blocked(void)
{
    tcpchat_config *c = big_config();
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    uint8_t *big = big_message();
    struct call s;
    call_init(&s, a);
    s.data = big;
    s.len = BIG;
    pthread_t t = start_blocked(send_call, &s); /* b does not read */

    uint8_t buf[64];
    size_t n = 99;
    double t0 = now_s();
    CHECK_ST(tcpchat_conn_try_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_WOULD_BLOCK);
    double took = now_s() - t0;
    CHECK(took < AT_ONCE);
    printf("try_recv while a send is blocked returned in %.4f s\n", took);
    CHECK(!atomic_load(&s.done));

    /* Messages from the peer come in while the send stays blocked. */
    CHECK_OK(send_str(b, "while your send waits"));
    tcpchat_status st;
    t0 = now_s();
    while ((st = tcpchat_conn_try_recv(a, buf, sizeof buf, &n)) == TCPCHAT_STATUS_WOULD_BLOCK &&
           now_s() - t0 < limit_s)
        sched_yield();
    if (CHECK_OK(st))
        CHECK_MSG(buf, n, "while your send waits");
    CHECK_OK(send_str(b, "a blocking recv too"));
    RECV_EXPECT(a, "a blocking recv too");
    CHECK(!atomic_load(&s.done));
    CHECK(wait_until_blocked(s.tid)); /* still in its send */

    /* The peer reads: the send completes, whole. */
    peer_reads_big(b, big);
    JOIN(t);
    CHECK_OK(s.status);
    free(big);
    event_destroy(&s.started);
    pair_free(a, b);
    tcpchat_config_free(c);
}

static void test_try_send_and_try_flush_while_a_recv_is_blocked(void)
{
    tcpchat_framing framings[] = {TCPCHAT_FRAMING_LINE, TCPCHAT_FRAMING_FRAME};
    for (int f = 0; f < 2; f++) {
        tcpchat_config *c = test_config(framings[f]);
        tcpchat_conn *a, *b;
        if (!conn_pair(c, &a, &b)) {
            tcpchat_config_free(c);
            return;
        }
        struct call r;
        call_init(&r, a);
        pthread_t t = start_blocked(recv_call, &r); /* b sends nothing */

        double t0 = now_s();
        CHECK_OK(tcpchat_conn_try_send(a, (const uint8_t *)"ping", 4));
        CHECK_OK(tcpchat_conn_try_flush(a));
        CHECK_OK(tcpchat_conn_queue(a, (const uint8_t *)"pong", 4));
        CHECK_OK(tcpchat_conn_try_flush(a));
        CHECK_OK(send_str(a, "blocking send"));
        double took = now_s() - t0;
        CHECK(took < AT_ONCE);
        printf("try_send, try_flush, send while a recv is blocked: %.4f s\n", took);
        RECV_EXPECT(b, "ping");
        RECV_EXPECT(b, "pong");
        RECV_EXPECT(b, "blocking send");
        CHECK(!atomic_load(&r.done));

        /* While another thread is in a receive, try_recv refuses at once. */
        uint8_t buf[16];
        size_t n;
        t0 = now_s();
        CHECK_ST(tcpchat_conn_try_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_WOULD_BLOCK);
        CHECK_ERR("another thread");
        CHECK(now_s() - t0 < AT_ONCE);

        /* This side is done sending: the peer sees the end of the stream
         * while the receive goes on waiting for its answer. */
        CHECK_OK(tcpchat_conn_shutdown_write(a));
        size_t m = 99;
        CHECK_ST(tcpchat_conn_recv(b, buf, sizeof buf, &m), TCPCHAT_STATUS_CLOSED);
        CHECK(m == 0);
        CHECK(!atomic_load(&r.done));

        CHECK_OK(send_str(b, "wake"));
        JOIN(t);
        CHECK_OK(r.status);
        CHECK_MSG(r.buf, r.len, "wake");
        event_destroy(&r.started);
        pair_free(a, b);
        tcpchat_config_free(c);
    }
}

/* While another thread is in a send, try_send and try_flush refuse at once. */
static void test_try_send_while_another_send_is_blocked(void)
{
    tcpchat_config *c = big_config();
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    uint8_t *big = big_message();
    struct call s;
    call_init(&s, a);
    s.data = big;
    s.len = BIG;
    pthread_t t = start_blocked(send_call, &s);
    double t0 = now_s();
    CHECK_ST(tcpchat_conn_try_send(a, (const uint8_t *)"x", 1), TCPCHAT_STATUS_WOULD_BLOCK);
    CHECK_ERR("another thread");
    CHECK_ST(tcpchat_conn_try_flush(a), TCPCHAT_STATUS_WOULD_BLOCK);
    CHECK(now_s() - t0 < AT_ONCE);
    peer_reads_big(b, big);
    JOIN(t);
    CHECK_OK(s.status);
    /* The refused message was not sent: the next one is what the peer gets. */
    CHECK_OK(send_str(a, "next"));
    RECV_EXPECT(b, "next");
    free(big);
    event_destroy(&s.started);
    pair_free(a, b);
    tcpchat_config_free(c);
}

/* ---- 3. cancel, server shutdown, close and free wake both sides --------- */

struct both {
    struct call r, s;
    pthread_t rt, st;
    uint8_t *big;
};

/* On `conn`: a receive blocked because the peer sends nothing, and a send
 * blocked because the peer reads nothing, each on its own thread. */
static void block_both(struct both *x, tcpchat_conn *conn)
{
    x->big = big_message();
    call_init(&x->r, conn);
    call_init(&x->s, conn);
    x->s.data = x->big;
    x->s.len = BIG;
    x->rt = start_blocked(recv_call, &x->r);
    x->st = start_blocked(send_call, &x->s);
}

/* Both returned `want`, within a second of t0. */
static void both_returned(struct both *x, tcpchat_status want, double t0, const char *what)
{
    JOIN(x->rt);
    JOIN(x->st);
    CHECK_ST(x->r.status, want);
    CHECK_ST(x->s.status, want);
    double rdelay = x->r.returned_at - t0, sdelay = x->s.returned_at - t0;
    CHECK(rdelay < 1.0 && sdelay < 1.0);
    printf("%s: the blocked recv returned %s after %.4f s, the blocked send after %.4f s\n", what,
           tcpchat_status_name(want), rdelay, sdelay);
    if (want == TCPCHAT_STATUS_LOCALLY_CLOSED) {
        if (!CHECK(strstr(x->r.error, "another thread") != NULL))
            fprintf(stderr, "  the receive said: %s\n", x->r.error);
        if (!CHECK(strstr(x->s.error, "another thread") != NULL))
            fprintf(stderr, "  the send said: %s\n", x->s.error);
    }
    event_destroy(&x->r.started);
    event_destroy(&x->s.started);
    free(x->big);
}

static void test_cancel_wakes_both_sides(void)
{
    tcpchat_config *c = big_config();
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    struct both x;
    block_both(&x, a);
    double t0 = now_s();
    CHECK_OK(tcpchat_conn_cancel(a));
    both_returned(&x, TCPCHAT_STATUS_CANCELLED, t0, "cancel");
    uint8_t buf[8];
    size_t n;
    CHECK_ST(tcpchat_conn_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_CANCELLED);
    CHECK_ST(tcpchat_conn_flush(a), TCPCHAT_STATUS_CANCELLED); /* the rest of the big message */
    t0 = now_s();
    tcpchat_conn_free(a); /* cancelled: does not wait for the peer */
    CHECK(now_s() - t0 < 1.0);
    tcpchat_conn_free(b);
    tcpchat_config_free(c);
}

static void test_server_shutdown_wakes_both_sides(void)
{
    tcpchat_config *c = big_config();
    uint16_t port;
    tcpchat_server *srv = bind_any(c, &port);
    tcpchat_conn *client = NULL, *accepted = NULL;
    if (!srv) {
        tcpchat_config_free(c);
        return;
    }
    if (CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, c, &client)) &&
        CHECK_OK(tcpchat_server_accept(srv, &accepted))) {
        struct both x;
        block_both(&x, accepted);
        double t0 = now_s();
        CHECK_OK(tcpchat_server_shutdown(srv));
        both_returned(&x, TCPCHAT_STATUS_CANCELLED, t0, "server shutdown");
        t0 = now_s();
        tcpchat_conn_free(accepted);
        CHECK(now_s() - t0 < 1.0);
    }
    tcpchat_conn_free(client);
    tcpchat_server_free(srv);
    tcpchat_config_free(c);
}

struct closer {
    tcpchat_conn *conn;
    bool use_free;
    tcpchat_status status;
    atomic_bool done;
};

static void *close_call(void *arg)
{
    struct closer *k = arg;
    if (k->use_free) {
        tcpchat_conn_free(k->conn);
        k->status = TCPCHAT_STATUS_OK;
    } else {
        k->status = tcpchat_conn_close(k->conn);
    }
    atomic_store(&k->done, true);
    return NULL;
}

/* Close (or free) from a third thread: the blocked receive and send return
 * CLOSED at once; then the close finishes gracefully: the rest of the
 * interrupted message still reaches the peer, then the end of the stream. */
static void test_close_from_a_third_thread_wakes_both_sides(bool use_free)
{
    const char *what = use_free ? "free from a third thread" : "close from a third thread";
    tcpchat_config *c = big_config();
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    struct both x;
    block_both(&x, a);
    uint8_t *big = malloc(BIG);
    memcpy(big, x.big, BIG);
    struct closer k = {.conn = a, .use_free = use_free};
    atomic_init(&k.done, false);
    double t0 = now_s();
    pthread_t ct = spawn(close_call, &k);
    both_returned(&x, TCPCHAT_STATUS_LOCALLY_CLOSED, t0, what);
    /* The graceful close sends what is queued: the peer gets the whole
     * message, then the end of the stream. */
    peer_reads_big(b, big);
    uint8_t buf[8];
    size_t n = 99;
    CHECK_ST(tcpchat_conn_recv(b, buf, sizeof buf, &n), TCPCHAT_STATUS_CLOSED);
    CHECK(n == 0);
    CHECK_OK(tcpchat_conn_shutdown_write(b)); /* the close's wait for our end is over */
    JOIN(ct);
    CHECK_OK(k.status);
    if (!use_free) {
        CHECK_ST(tcpchat_conn_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_LOCALLY_CLOSED);
        CHECK_ST(send_str(a, "after close"), TCPCHAT_STATUS_LOCALLY_CLOSED);
        CHECK_ST(tcpchat_conn_try_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_LOCALLY_CLOSED);
        tcpchat_conn_free(a);
    }
    free(big);
    tcpchat_conn_free(b);
    tcpchat_config_free(c);
}

/* ---- 4. two receivers (two senders) are serialised, each bounded ------------ */

static void test_two_receivers(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    CHECK_OK(tcpchat_conn_set_read_timeout_ms(a, 0)); /* the first waits for ever */
    struct call r;
    call_init(&r, a);
    pthread_t t = start_blocked(recv_call, &r);
    CHECK_OK(tcpchat_conn_set_read_timeout_ms(a, 200)); /* the second, 200 ms */
    uint8_t buf[16];
    size_t n;
    double t0 = now_s();
    CHECK_ST(tcpchat_conn_recv(a, buf, sizeof buf, &n), TCPCHAT_STATUS_TIMEOUT);
    double took = now_s() - t0;
    CHECK_ERR("another thread");
    CHECK(took >= 0.1 && took < 5.0);
    printf("a second receiver timed out after %.3f s (read timeout 200 ms)\n", took);
    CHECK(!atomic_load(&r.done)); /* the first still waits, unbounded */
    CHECK_OK(send_str(b, "for the first"));
    JOIN(t);
    CHECK_OK(r.status);
    CHECK_MSG(r.buf, r.len, "for the first");
    event_destroy(&r.started);
    pair_free(a, b);
    tcpchat_config_free(c);
}

static void test_two_senders(void)
{
    tcpchat_config *c = big_config();
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    uint8_t *big = big_message();
    CHECK_OK(tcpchat_conn_set_write_timeout_ms(a, 0));
    struct call s;
    call_init(&s, a);
    s.data = big;
    s.len = BIG;
    pthread_t t = start_blocked(send_call, &s);
    CHECK_OK(tcpchat_conn_set_write_timeout_ms(a, 200));
    double t0 = now_s();
    CHECK_ST(send_str(a, "second"), TCPCHAT_STATUS_TIMEOUT);
    double took = now_s() - t0;
    CHECK_ERR("another thread");
    CHECK(took >= 0.1 && took < 5.0);
    printf("a second sender timed out after %.3f s (write timeout 200 ms)\n", took);
    CHECK(!atomic_load(&s.done));
    peer_reads_big(b, big);
    JOIN(t);
    CHECK_OK(s.status);
    CHECK_OK(send_str(a, "second, again"));
    RECV_EXPECT(b, "second, again"); /* the timed-out one never went */
    free(big);
    event_destroy(&s.started);
    pair_free(a, b);
    tcpchat_config_free(c);
}

/* A receive waiting behind another thread's receive (not in poll: in the
 * handle's own wait) is woken too: by a cancel, and by a close. */
static void test_waiting_receivers_are_woken(bool by_close)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    tcpchat_conn *a, *b;
    if (!conn_pair(c, &a, &b)) {
        tcpchat_config_free(c);
        return;
    }
    CHECK_OK(tcpchat_conn_set_read_timeout_ms(a, 0));
    struct call first, second;
    call_init(&first, a);
    call_init(&second, a);
    pthread_t t1 = start_blocked(recv_call, &first);
    pthread_t t2 = spawn(recv_call, &second);
    EVENT_WAIT(&second.started);
    CHECK(wait_until_in_futex(second.tid));
    CHECK(!atomic_load(&second.done));
    double t0 = now_s();
    tcpchat_status want = by_close ? TCPCHAT_STATUS_LOCALLY_CLOSED : TCPCHAT_STATUS_CANCELLED;
    struct closer k = {.conn = a};
    atomic_init(&k.done, false);
    pthread_t ct;
    if (by_close)
        ct = spawn(close_call, &k); /* from a third thread */
    else
        CHECK_OK(tcpchat_conn_cancel(a));
    JOIN(t1);
    JOIN(t2);
    CHECK_ST(first.status, want);
    CHECK_ST(second.status, want);
    CHECK(first.returned_at - t0 < 1.0 && second.returned_at - t0 < 1.0);
    if (by_close) {
        /* The one in poll saw the close happen; the one behind it, woken
         * in the handle's wait, may find the close under way or done. */
        if (!CHECK(strstr(first.error, "another thread") != NULL))
            fprintf(stderr, "  the first receive said: %s\n", first.error);
        if (!CHECK(strstr(second.error, "another thread") != NULL ||
                   strstr(second.error, "tcpchat_conn_close") != NULL))
            fprintf(stderr, "  the second receive said: %s\n", second.error);
        CHECK_OK(tcpchat_conn_shutdown_write(b)); /* the close's wait for our end is over */
        JOIN(ct);
        CHECK_OK(k.status);
    }
    printf("%s: the receive in poll returned after %.4f s, the one waiting behind it after %.4f s\n",
           by_close ? "close from a third thread" : "cancel", first.returned_at - t0, second.returned_at - t0);
    event_destroy(&first.started);
    event_destroy(&second.started);
    pair_free(a, b);
    tcpchat_config_free(c);
}

/* ---- 5. the pollable descriptor with both sides in use -------------------- */

struct poll_sender {
    tcpchat_conn *conn;
    uint64_t n;
    tcpchat_status status;
};

static void *poll_sender(void *arg)
{
    struct poll_sender *p = arg;
    char m[32];
    tcpchat_status st = TCPCHAT_STATUS_OK;
    for (uint64_t i = 0; i < p->n && st == TCPCHAT_STATUS_OK; i++)
        st = tcpchat_conn_send(p->conn, (const uint8_t *)m, message(i, m));
    p->status = st;
    return NULL;
}

/* Wait (bounded) for the descriptor; false on a timeout. */
static bool poll_readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r == 1;
}

static void test_poll_fd_with_both_sides_in_use(void)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    CHECK_OK(tcpchat_config_set_write_timeout_ms(c, (uint64_t)limit_s * 1000));
    struct echo_run e;
    if (!echo_start(&e, c)) {
        tcpchat_config_free(c);
        return;
    }
    tcpchat_conn *conn = NULL;
    if (!CHECK_OK(tcpchat_conn_connect("127.0.0.1", e.port, c, &conn))) {
        echo_stop(&e);
        tcpchat_config_free(c);
        return;
    }
    int32_t fd = -1;
    CHECK_OK(tcpchat_conn_fd(conn, &fd));
    struct poll_sender ps = {.conn = conn, .n = valgrind ? 5000 : 200000};
    double t0 = now_s();
    pthread_t t = spawn(poll_sender, &ps);
    /* The event loop: wait for the descriptor, then take one message (odd
     * wake-ups) or everything there is (even ones). Level-triggered: what
     * is left after taking one keeps the descriptor readable. */
    uint64_t got = 0, wakeups = 0, empty = 0;
    uint8_t buf[64];
    char want[32];
    bool ok = true;
    while (ok && got < ps.n) {
        if (!poll_readable(fd, limit_s * 1000)) {
            fprintf(stderr, "the descriptor stayed unreadable with %" PRIu64 " of %" PRIu64 " messages in\n", got,
                    ps.n);
            ok = false;
            break;
        }
        wakeups++;
        bool drain = wakeups % 2 == 0, any = false;
        for (;;) {
            size_t n = 0;
            tcpchat_status st = tcpchat_conn_try_recv(conn, buf, sizeof buf, &n);
            if (st == TCPCHAT_STATUS_WOULD_BLOCK)
                break;
            if (st != TCPCHAT_STATUS_OK) {
                CHECK_OK(st);
                ok = false;
                break;
            }
            size_t wl = message(got, want);
            if (n != wl || memcmp(buf, want, wl) != 0) {
                fprintf(stderr, "message %" PRIu64 " is \"%.*s\"\n", got, (int)n, (const char *)buf);
                ok = false;
                break;
            }
            got++;
            any = true;
            if (!drain)
                break;
        }
        if (!any)
            empty++;
    }
    CHECK(ok);
    CHECK(got == ps.n);
    JOIN(t);
    CHECK_OK(ps.status);
    printf("poll fd: %" PRIu64 " messages in %.2f s, %" PRIu64 " wake-ups (%" PRIu64
           " found nothing complete yet)\n",
           got, now_s() - t0, wakeups, empty);

    /* Exactly: 100 messages in one write; each is announced by the
     * descriptor until taken, and then it goes quiet. */
    const uint8_t *ptrs[100];
    size_t lens[100];
    char text[100][32];
    for (int i = 0; i < 100; i++) {
        lens[i] = message((uint64_t)i, text[i]);
        ptrs[i] = (const uint8_t *)text[i];
    }
    CHECK_OK(tcpchat_conn_send_many(conn, ptrs, lens, 100));
    int taken = 0;
    while (taken < 100) {
        if (!CHECK(poll_readable(fd, limit_s * 1000)))
            break;
        size_t n = 0;
        tcpchat_status st = tcpchat_conn_try_recv(conn, buf, sizeof buf, &n);
        if (st == TCPCHAT_STATUS_WOULD_BLOCK)
            continue; /* the rest of a message still on its way */
        if (!CHECK_OK(st) || !CHECK(n == lens[taken] && memcmp(buf, text[taken], n) == 0))
            break;
        taken++;
    }
    CHECK(taken == 100);
    CHECK(!poll_readable(fd, 0)); /* nothing pending, nothing queued */
    CHECK_OK(tcpchat_conn_shutdown_write(conn));
    CHECK(poll_readable(fd, limit_s * 1000)); /* the echo service closes */
    size_t n = 99;
    CHECK_ST(tcpchat_conn_try_recv(conn, buf, sizeof buf, &n), TCPCHAT_STATUS_CLOSED);
    tcpchat_conn_free(conn);
    echo_stop(&e);
    tcpchat_config_free(c);
}

int main(void)
{
    valgrind = under_valgrind();
    if (valgrind)
        limit_s = 120;
    alarm(600); /* the last resort: no run may hang */
    printf("duplex stress: %" PRIu64 " messages per framing%s\n", stress_messages(),
           valgrind ? " (under valgrind)" : "");
    test_stress(TCPCHAT_FRAMING_RAW, "raw");
    test_stress(TCPCHAT_FRAMING_LINE, "line");
    test_stress(TCPCHAT_FRAMING_FRAME, "frame");
    test_try_recv_while_a_send_is_blocked();
    test_try_send_and_try_flush_while_a_recv_is_blocked();
    test_try_send_while_another_send_is_blocked();
    test_cancel_wakes_both_sides();
    test_server_shutdown_wakes_both_sides();
    test_close_from_a_third_thread_wakes_both_sides(false);
    test_close_from_a_third_thread_wakes_both_sides(true);
    test_two_receivers();
    test_two_senders();
    test_waiting_receivers_are_woken(false);
    test_waiting_receivers_are_woken(true);
    test_poll_fd_with_both_sides_in_use();
    return finish();
}

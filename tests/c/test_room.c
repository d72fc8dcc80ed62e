/*
 * The chat room through the C API alone, with clients over raw POSIX
 * sockets: broadcast with names and in order, commands and notices, the full
 * room, the event callback, posts and shutdown from other threads,
 * tcpchat_room_run's return, and misuse.
 *
 * Every wait is a read with a timeout (SO_RCVTIMEO), a join of a thread
 * that only does such reads, or a bounded condition wait: a bug fails a
 * check instead of hanging. Nothing sleeps to synchronise.
 */
#define _POSIX_C_SOURCE 200809L /* strdup, clock_gettime, pthread_cond_timedwait */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* The longest any single wait may take, in seconds (valgrind is slow). */
#define LIMIT 30

#define WELCOME_TAIL " (commands: /nick NAME, /who, /quit)"

/* ---- a client of the room, over a raw socket, read line by line -------- */

struct peer {
    int fd;
    char name[40];
    size_t start, end; /* buf[start..end) is read but not yet returned */
    char buf[8192];
};

static bool peer_connect(struct peer *p, uint16_t port)
{
    p->start = p->end = 0;
    p->name[0] = '\0';
    p->fd = raw_connect(port);
    if (p->fd < 0)
        return false;
    struct timeval tv = {LIMIT, 0};
    setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(p->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return true;
}

/* The next line without its `\n` into out (NUL-terminated; it may hold NUL
 * bytes too); its length, or -1 at end of stream, on error or timeout. */
static long peer_line(struct peer *p, char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(p->buf + p->start, '\n', p->end - p->start);
        if (nl) {
            size_t len = (size_t)(nl - (p->buf + p->start));
            if (len >= cap)
                return -1;
            memcpy(out, p->buf + p->start, len);
            out[len] = '\0';
            p->start += len + 1;
            return (long)len;
        }
        if (p->start > 0) { /* make room */
            memmove(p->buf, p->buf + p->start, p->end - p->start);
            p->end -= p->start;
            p->start = 0;
        }
        if (p->end == sizeof p->buf)
            return -1;
        ssize_t n = recv(p->fd, p->buf + p->end, sizeof p->buf - p->end, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p->end += (size_t)n;
    }
}

static bool peer_expect(struct peer *p, const char *want, const char *file, int line)
{
    char got[8192];
    long n = peer_line(p, got, sizeof got);
    if (n < 0)
        return check_true(false, "a line came (not end of stream or timeout)", file, line);
    return check_bytes(got, (size_t)n, want, p->name[0] ? p->name : "line", file, line);
}
#define EXPECT(p, want) peer_expect((p), (want), __FILE__, __LINE__)

/* Everything until end of stream (a reset counts too), buffered bytes
 * included, NUL-terminated; its length, or -1 on timeout or overflow. */
static long peer_rest(struct peer *p, char *out, size_t cap)
{
    size_t len = p->end - p->start;
    if (len >= cap)
        return -1;
    memcpy(out, p->buf + p->start, len);
    p->start = p->end = 0;
    for (;;) {
        ssize_t n = recv(p->fd, out + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            break;
        if (n < 0 || len + (size_t)n >= cap - 1)
            return -1;
        len += (size_t)n;
    }
    out[len] = '\0';
    return (long)len;
}

/* The rest of the stream is exactly `want`, then end of stream. */
#define EXPECT_REST(p, want)                                                                                 \
    do {                                                                                                     \
        char rest_[1024];                                                                                    \
        long n_ = peer_rest((p), rest_, sizeof rest_);                                                       \
        if (CHECK(n_ >= 0))                                                                                  \
            CHECK_MSG(rest_, (size_t)n_, (want));                                                            \
    } while (0)

static bool peer_send(struct peer *p, const char *line)
{
    return raw_write_all(p->fd, line, strlen(line)) && raw_write_all(p->fd, "\n", 1);
}
#define SEND(p, line) CHECK(peer_send((p), (line)))

static void peer_close(struct peer *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

/* Connect and read the welcome line, which gives the name. */
static bool peer_join(struct peer *p, uint16_t port)
{
    char line[256];
    if (!CHECK(peer_connect(p, port)))
        return false;
    long n = peer_line(p, line, sizeof line);
    const char *prefix = "* welcome, you are ";
    if (!CHECK(n > 0 && strncmp(line, prefix, strlen(prefix)) == 0))
        return false;
    const char *name = line + strlen(prefix);
    size_t len = strcspn(name, " ");
    if (!CHECK(len < sizeof p->name && strcmp(name + len, WELCOME_TAIL) == 0))
        return false;
    memcpy(p->name, name, len);
    p->name[len] = '\0';
    return true;
}

/* n members, each having seen the joins of those after it, so that every
 * stream is at a known point. */
static bool members(uint16_t port, struct peer *peers, int n)
{
    char want[128];
    for (int i = 0; i < n; i++)
        peers[i].fd = -1;
    for (int i = 0; i < n; i++) {
        if (!peer_join(&peers[i], port))
            return false;
        snprintf(want, sizeof want, "* %s joined", peers[i].name);
        for (int j = 0; j < i; j++)
            if (!EXPECT(&peers[j], want))
                return false;
    }
    return true;
}

static void close_all(struct peer *peers, int n)
{
    for (int i = 0; i < n; i++)
        peer_close(&peers[i]);
}

/* Bind a room on 127.0.0.1 port 0 (the test config with max_clients if not
 * 0); the port in *port. */
static tcpchat_room *bind_room(size_t max_clients, uint16_t *port)
{
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_LINE);
    if (max_clients)
        CHECK_OK(tcpchat_config_set_max_clients(c, max_clients));
    tcpchat_room *room = NULL;
    CHECK_OK(tcpchat_room_bind("127.0.0.1", 0, c, 0, &room));
    tcpchat_config_free(c);
    if (room) {
        int32_t p = 0;
        CHECK_OK(tcpchat_room_local_port(room, &p));
        CHECK(p > 0 && p <= 65535);
        *port = (uint16_t)p;
    }
    return room;
}

static tcpchat_room *start_room(size_t max_clients, uint16_t *port)
{
    tcpchat_room *room = bind_room(max_clients, port);
    if (room && !CHECK_OK(tcpchat_room_start(room))) {
        tcpchat_room_free(room);
        return NULL;
    }
    return room;
}

static tcpchat_room_stats stats_of(tcpchat_room *room)
{
    tcpchat_room_stats s;
    memset(&s, 0xff, sizeof s);
    CHECK_OK(tcpchat_room_get_stats(room, &s));
    return s;
}

/* ---- events, copied by the callback ------------------------------------ */

struct copied {
    tcpchat_room_event_kind kind;
    uint64_t id;
    char *name, *old_name, *text, *address; /* NULL where the event had NULL */
    size_t text_len;
    tcpchat_leave_reason reason;
};

#define MAX_EVENTS 32

struct recorder {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct copied ev[MAX_EVENTS];
    int count, taken;
    bool overflow;
};

static char *copy_or_null(const char *s, size_t len)
{
    if (!s)
        return NULL;
    char *c = malloc(len + 1);
    if (c)
        memcpy(c, s, len + 1);
    return c;
}

/* The event and its strings are valid only during the call: copy them. */
static void record(void *user_data, const tcpchat_room_event *e)
{
    struct recorder *r = user_data;
    pthread_mutex_lock(&r->mu);
    if (r->count == MAX_EVENTS) {
        r->overflow = true;
    } else {
        struct copied *c = &r->ev[r->count++];
        c->kind = e->kind;
        c->id = e->client_id;
        c->name = copy_or_null(e->name, e->name ? strlen(e->name) : 0);
        c->old_name = copy_or_null(e->old_name, e->old_name ? strlen(e->old_name) : 0);
        c->text = copy_or_null(e->text, e->text_len);
        c->address = copy_or_null(e->address, e->address ? strlen(e->address) : 0);
        c->text_len = e->text_len;
        c->reason = e->reason;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void recorder_init(struct recorder *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void recorder_free(struct recorder *r)
{
    for (int i = 0; i < r->count; i++) {
        free(r->ev[i].name);
        free(r->ev[i].old_name);
        free(r->ev[i].text);
        free(r->ev[i].address);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

/* The next event, waiting at most LIMIT seconds; NULL if none came. */
static const struct copied *next_event(struct recorder *r)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += LIMIT;
    const struct copied *c = NULL;
    pthread_mutex_lock(&r->mu);
    while (r->taken == r->count && !r->overflow)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT)
            break;
    if (r->taken < r->count)
        c = &r->ev[r->taken++];
    pthread_mutex_unlock(&r->mu);
    CHECK(c != NULL);
    return c;
}

static bool str_is(const char *got, const char *want)
{
    return got && strcmp(got, want) == 0;
}

/* ---- the tests ---------------------------------------------------------- */

#define CLIENTS 5
#define LINES 100

struct talker {
    struct peer *peer;
    const struct peer *all;
};

/* Send LINES lines at once, then read the (CLIENTS-1)*LINES lines of the
 * others: each sender's in order, none from itself. */
static void *talk(void *arg)
{
    struct talker *t = arg;
    struct peer *p = t->peer;
    char *batch = malloc(LINES * 64), line[256];
    size_t len = 0;
    for (int i = 0; i < LINES; i++)
        len += (size_t)snprintf(batch + len, 64, "line %d from %s\n", i, p->name);
    CHECK(raw_write_all(p->fd, batch, len));
    free(batch);

    /* One check per line would count thousands: one check in all, or the
     * first line that is wrong. */
    int next[CLIENTS] = {0}; /* the next line number expected from each sender */
    for (int k = 0; k < (CLIENTS - 1) * LINES; k++) {
        long n = peer_line(p, line, sizeof line);
        char *sep = n > 0 ? strstr(line, ": ") : NULL;
        if (!sep) {
            CHECK(!"a line NAME: TEXT came");
            return NULL;
        }
        *sep = '\0';
        int from = -1;
        for (int i = 0; i < CLIENTS; i++)
            if (strcmp(t->all[i].name, line) == 0)
                from = i;
        if (from < 0 || &t->all[from] == p) { /* from another member, never its own line back */
            CHECK_MSG(line, strlen(line), "the name of another member");
            return NULL;
        }
        char want[128];
        snprintf(want, sizeof want, "line %d from %s", next[from]++, t->all[from].name);
        if (strcmp(sep + 2, want) != 0) {
            CHECK_MSG(sep + 2, strlen(sep + 2), want);
            return NULL;
        }
    }
    bool all = true;
    for (int i = 0; i < CLIENTS; i++)
        all = all && next[i] == (&t->all[i] == p ? 0 : LINES);
    CHECK(all);
    return NULL;
}

static void test_broadcast_in_order_from_many_senders(void)
{
    uint16_t port;
    tcpchat_room *room = start_room(0, &port);
    struct peer peers[CLIENTS];
    if (!room || !members(port, peers, CLIENTS)) {
        tcpchat_room_free(room);
        return;
    }
    struct talker talkers[CLIENTS];
    pthread_t threads[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        talkers[i] = (struct talker){&peers[i], peers};
        threads[i] = spawn(talk, &talkers[i]);
    }
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(threads[i], NULL);
    /* Nothing more (no doubles, no echoes) was queued: each client's next
     * line is the answer to its own /who. */
    for (int i = 0; i < CLIENTS; i++) {
        SEND(&peers[i], "/who");
        EXPECT(&peers[i], "* 5 online: guest1, guest2, guest3, guest4, guest5");
    }
    tcpchat_room_stats s = stats_of(room);
    CHECK(s.messages == CLIENTS * LINES && s.joined == CLIENTS && s.online == CLIENTS);
    close_all(peers, CLIENTS);
    tcpchat_room_free(room);
}

static void test_names_commands_and_notices(void)
{
    uint16_t port;
    tcpchat_room *room = start_room(0, &port);
    struct peer p[3];
    if (!room || !members(port, p, 3)) {
        tcpchat_room_free(room);
        return;
    }
    CHECK(str_is(p[0].name, "guest1") && str_is(p[1].name, "guest2") && str_is(p[2].name, "guest3"));

    SEND(&p[0], "/nick alice");
    EXPECT(&p[0], "* you are now known as alice");
    EXPECT(&p[1], "* guest1 is now known as alice");
    EXPECT(&p[2], "* guest1 is now known as alice");

    /* Refusals go to the asker alone. */
    SEND(&p[1], "/nick ALICE");
    EXPECT(&p[1], "error: the name ALICE is taken");
    SEND(&p[1], "/nick bad name!");
    EXPECT(&p[1], "error: invalid name \"bad name!\": use 1 to 32 letters, digits, _ or -");
    SEND(&p[1], "/nick");
    EXPECT(&p[1], "error: usage: /nick NAME");
    SEND(&p[1], "/frob");
    EXPECT(&p[1], "error: unknown command /frob (commands: /nick NAME, /who, /quit)");

    /* A message reaches the others with the sender's name, not the sender. */
    SEND(&p[0], "hello, room");
    EXPECT(&p[1], "alice: hello, room");
    EXPECT(&p[2], "alice: hello, room");
    SEND(&p[0], "/who");
    EXPECT(&p[0], "* 3 online: alice, guest2, guest3");

    SEND(&p[2], "/quit");
    EXPECT(&p[2], "* bye");
    EXPECT_REST(&p[2], "");
    EXPECT(&p[0], "* guest3 left");
    EXPECT(&p[1], "* guest3 left");

    /* A member that closes leaves too. */
    peer_close(&p[1]);
    EXPECT(&p[0], "* guest2 left");
    SEND(&p[0], "/who");
    EXPECT(&p[0], "* 1 online: alice");
    close_all(p, 3);
    tcpchat_room_free(room);
}

static void test_invalid_utf8_is_refused_to_the_sender(void)
{
    uint16_t port;
    tcpchat_room *room = start_room(0, &port);
    struct peer p[2];
    if (room && members(port, p, 2)) {
        static const char bad[] = "caf\xc3\x28 \xff\n";
        CHECK(raw_write_all(p[0].fd, bad, sizeof bad - 1));
        EXPECT(&p[0], "error: your line is not valid UTF-8; it was not sent");
        SEND(&p[0], "still here");
        EXPECT(&p[1], "guest1: still here"); /* p[1] got nothing before it */
        close_all(p, 2);
    }
    tcpchat_room_free(room);
}

static void test_a_full_room_refuses_with_one_line(void)
{
    uint16_t port;
    tcpchat_room *room = start_room(2, &port);
    struct peer p[2], extra;
    if (!room || !members(port, p, 2)) {
        tcpchat_room_free(room);
        return;
    }
    if (CHECK(peer_connect(&extra, port))) {
        EXPECT_REST(&extra, "error: server full (2 clients); try again later\n");
        peer_close(&extra);
    }
    SEND(&p[0], "still serving");
    EXPECT(&p[1], "guest1: still serving");
    tcpchat_room_stats s = stats_of(room);
    CHECK(s.refused == 1 && s.joined == 2 && s.online == 2);
    close_all(p, 2);
    tcpchat_room_free(room);
}

static void test_the_callback_sees_every_event(void)
{
    struct recorder rec;
    recorder_init(&rec);
    uint16_t port;
    tcpchat_room *room = bind_room(0, &port);
    struct peer p[2];
    if (!room || !CHECK_OK(tcpchat_room_set_callback(room, record, &rec)) ||
        !CHECK_OK(tcpchat_room_start(room)) || !members(port, p, 2)) {
        tcpchat_room_free(room);
        recorder_free(&rec);
        return;
    }
    /* Set before the room runs, not while it does. */
    CHECK_INVALID(tcpchat_room_set_callback(room, record, &rec));
    CHECK_INVALID(tcpchat_room_set_callback(room, NULL, NULL));

    struct sockaddr_in local;
    socklen_t alen = sizeof local;
    char want_addr[TCPCHAT_ADDR_MAX];
    getsockname(p[0].fd, (struct sockaddr *)&local, &alen);
    snprintf(want_addr, sizeof want_addr, "127.0.0.1:%u", (unsigned)ntohs(local.sin_port));

    const struct copied *e = next_event(&rec);
    if (e) {
        CHECK(e->kind == TCPCHAT_ROOM_EVENT_JOIN && e->id == 1 && str_is(e->name, "guest1"));
        CHECK(str_is(e->address, want_addr));
        CHECK(!e->old_name && !e->text && e->text_len == 0 && e->reason == TCPCHAT_LEAVE_REASON_QUIT);
    }
    e = next_event(&rec);
    CHECK(e && e->kind == TCPCHAT_ROOM_EVENT_JOIN && e->id == 2 && str_is(e->name, "guest2"));

    SEND(&p[0], "hi there");
    EXPECT(&p[1], "guest1: hi there");
    e = next_event(&rec);
    if (e) {
        CHECK(e->kind == TCPCHAT_ROOM_EVENT_MESSAGE && e->id == 1 && str_is(e->name, "guest1"));
        CHECK(str_is(e->text, "hi there") && e->text_len == 8 && !e->old_name && !e->address);
    }

    /* A NUL byte is valid UTF-8: the event has it (text_len counts it), the
       others see it escaped, never raw. */
    char line[64];
    CHECK(raw_write_all(p[0].fd, "a\0b\n", 4));
    CHECK(peer_line(&p[1], line, sizeof line) == 14 && memcmp(line, "guest1: a\\x00b", 14) == 0);
    e = next_event(&rec);
    CHECK(e && e->kind == TCPCHAT_ROOM_EVENT_MESSAGE && e->text_len == 3 && memcmp(e->text, "a\0b", 4) == 0);

    SEND(&p[0], "/nick ann");
    EXPECT(&p[0], "* you are now known as ann");
    EXPECT(&p[1], "* guest1 is now known as ann");
    e = next_event(&rec);
    if (e) {
        CHECK(e->kind == TCPCHAT_ROOM_EVENT_RENAME && e->id == 1);
        CHECK(str_is(e->name, "ann") && str_is(e->old_name, "guest1") && !e->text && !e->address);
    }

    SEND(&p[0], "/quit");
    EXPECT(&p[0], "* bye");
    EXPECT(&p[1], "* ann left");
    e = next_event(&rec);
    CHECK(e && e->kind == TCPCHAT_ROOM_EVENT_LEAVE && e->id == 1 && str_is(e->name, "ann") &&
          e->reason == TCPCHAT_LEAVE_REASON_QUIT);
    peer_close(&p[1]);
    e = next_event(&rec);
    CHECK(e && e->kind == TCPCHAT_ROOM_EVENT_LEAVE && e->id == 2 && str_is(e->name, "guest2") &&
          e->reason == TCPCHAT_LEAVE_REASON_CLOSED);

    close_all(p, 2);
    tcpchat_room_free(room); /* no more events after this */
    CHECK(rec.count == 7 && !rec.overflow);
    recorder_free(&rec);
}

/* The callback posts an answer to every message, and shuts the room down on
 * "stop" (the shutdown returns at once there; the room stops after). */
struct poster {
    tcpchat_room *room;
    tcpchat_status status;
};

static void answer(void *user_data, const tcpchat_room_event *e)
{
    struct poster *ps = user_data;
    if (e->kind != TCPCHAT_ROOM_EVENT_MESSAGE)
        return;
    if (strcmp(e->text, "stop") == 0) {
        ps->status = tcpchat_room_shutdown(ps->room);
        return;
    }
    char text[128];
    snprintf(text, sizeof text, "%s said %zu bytes", e->name, e->text_len);
    ps->status = tcpchat_room_post(ps->room, text);
}

static void test_the_callback_can_post_and_shut_down(void)
{
    uint16_t port;
    struct poster ps = {NULL, TCPCHAT_STATUS_OK};
    ps.room = bind_room(0, &port);
    struct peer p[2];
    if (!ps.room || !CHECK_OK(tcpchat_room_set_callback(ps.room, answer, &ps)) ||
        !CHECK_OK(tcpchat_room_start(ps.room)) || !members(port, p, 2)) {
        tcpchat_room_free(ps.room);
        return;
    }
    SEND(&p[0], "hello");
    EXPECT(&p[1], "guest1: hello");
    EXPECT(&p[0], "* guest1 said 5 bytes");
    EXPECT(&p[1], "* guest1 said 5 bytes");
    SEND(&p[0], "stop");
    EXPECT(&p[1], "guest1: stop");
    EXPECT_REST(&p[0], "* server shutting down\n");
    EXPECT_REST(&p[1], "* server shutting down\n");
    close_all(p, 2);
    CHECK_OK(tcpchat_room_shutdown(ps.room)); /* waits for the room to stop */
    CHECK(stats_of(ps.room).online == 0);
    CHECK_OK(ps.status);
    tcpchat_room_free(ps.room);
}

static void *post_maintenance(void *room)
{
    CHECK_OK(tcpchat_room_post(room, "maintenance at noon"));
    return NULL;
}

static void test_post_from_another_thread(void)
{
    uint16_t port;
    tcpchat_room *room = start_room(0, &port);
    struct peer p[3];
    if (room && members(port, p, 3)) {
        pthread_join(spawn(post_maintenance, room), NULL);
        for (int i = 0; i < 3; i++)
            EXPECT(&p[i], "* maintenance at noon");
        close_all(p, 3);
    }
    tcpchat_room_free(room);
}

/* Terminal controls: escaped by default, raw once the program opts out. */
static void test_terminal_controls_are_escaped_unless_raw(void)
{
    uint16_t port;
    tcpchat_room *room = start_room(0, &port);
    struct peer p[2];
    char want[128];
    if (room && members(port, p, 2)) {
        SEND(&p[0], "\x1b[2J\x1b]52;c;eA==\x07 \xe2\x80\xae");
        snprintf(want, sizeof want, "%s: \\x1b[2J\\x1b]52;c;eA==\\x07 \\u{202e}", p[0].name);
        EXPECT(&p[1], want);
        CHECK_OK(tcpchat_room_post(room, "note\r"));
        EXPECT(&p[1], "* note\\x0d");
        CHECK_OK(tcpchat_room_set_raw_text(room, true));
        SEND(&p[0], "\x1b[2J");
        snprintf(want, sizeof want, "%s: \x1b[2J", p[0].name);
        EXPECT(&p[1], want);
        close_all(p, 2);
    }
    CHECK_INVALID(tcpchat_room_set_raw_text(NULL, true));
    tcpchat_room_free(room);
}

/* tcpchat_escape_text: the notation, the size query, bad arguments. */
static void test_escape_text(void)
{
    char buf[64];
    size_t n = 0;
    CHECK_OK(tcpchat_escape_text((const uint8_t *)"a\x1b[2J\xff\tz", 8, buf, sizeof buf, &n));
    CHECK(n == 14 && strcmp(buf, "a\\x1b[2J\\xff\tz") == 0);
    CHECK_ST(tcpchat_escape_text((const uint8_t *)"\x1b", 1, NULL, 0, &n), TCPCHAT_STATUS_BUFFER_TOO_SMALL);
    CHECK(n == 5);
    CHECK_OK(tcpchat_escape_text(NULL, 0, buf, sizeof buf, &n));
    CHECK(n == 0 && buf[0] == '\0');
    CHECK_INVALID(tcpchat_escape_text(NULL, 3, buf, sizeof buf, &n));
    CHECK_INVALID(tcpchat_escape_text((const uint8_t *)"x", 1, buf, sizeof buf, NULL));
}

struct runner {
    tcpchat_room *room;
    tcpchat_status status;
    tcpchat_room_stats stats;
};

static void *run_room(void *arg)
{
    struct runner *r = arg;
    r->status = tcpchat_room_run(r->room, &r->stats);
    return NULL;
}

static void *read_to_end(void *arg)
{
    struct peer *p = arg;
    EXPECT_REST(p, "* server shutting down\n");
    peer_close(p); /* the room finishes closing this client now */
    return NULL;
}

static void *shut_down(void *room)
{
    CHECK_OK(tcpchat_room_shutdown(room));
    return NULL;
}

/* A connect to the port is refused (quietly: no perror). */
static bool connect_refused(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool refused = connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno == ECONNREFUSED;
    close(fd);
    return refused;
}

static void test_run_until_shutdown_from_another_thread(void)
{
    uint16_t port;
    struct runner r = {bind_room(0, &port), TCPCHAT_STATUS_IO, {0, 0, 0, 0, 0}};
    if (!r.room)
        return;
    memset(&r.stats, 0xff, sizeof r.stats);
    pthread_t runner = spawn(run_room, &r);
    struct peer p[3];
    if (!members(port, p, 3)) { /* the welcome lines prove the loop runs */
        tcpchat_room_shutdown(r.room);
        pthread_join(runner, NULL);
        close_all(p, 3);
        tcpchat_room_free(r.room);
        return;
    }
    CHECK_INVALID(tcpchat_room_start(r.room)); /* it already runs */
    CHECK_INVALID(tcpchat_room_run(r.room, NULL));
    SEND(&p[0], "hello");
    EXPECT(&p[1], "guest1: hello");
    EXPECT(&p[2], "guest1: hello");

    pthread_t readers[3];
    for (int i = 0; i < 3; i++)
        readers[i] = spawn(read_to_end, &p[i]);
    pthread_join(spawn(shut_down, r.room), NULL);
    /* shutdown returned: the room has stopped, and so has run. */
    CHECK(stats_of(r.room).online == 0);
    pthread_join(runner, NULL);
    CHECK_OK(r.status);
    CHECK(r.stats.joined == 3 && r.stats.refused == 0 && r.stats.messages == 1 && r.stats.dropped == 0 &&
          r.stats.online == 0);
    for (int i = 0; i < 3; i++)
        pthread_join(readers[i], NULL);
    CHECK(connect_refused(port));

    /* Afterwards: shutdown again is fine; the rest is cancelled. */
    CHECK_OK(tcpchat_room_shutdown(r.room));
    CHECK_ST(tcpchat_room_run(r.room, &r.stats), TCPCHAT_STATUS_CANCELLED);
    CHECK_ST(tcpchat_room_start(r.room), TCPCHAT_STATUS_CANCELLED);
    CHECK_ST(tcpchat_room_post(r.room, "late"), TCPCHAT_STATUS_CANCELLED);
    CHECK_ST(tcpchat_room_set_callback(r.room, NULL, NULL), TCPCHAT_STATUS_CANCELLED);
    int32_t still = 0;
    CHECK_OK(tcpchat_room_local_port(r.room, &still)); /* still readable */
    CHECK(still == port);
    tcpchat_room_free(r.room);
}

static void test_misuse(void)
{
    tcpchat_room *sentinel = (tcpchat_room *)&sentinel, *room = sentinel;
    /* The room speaks lines only. */
    tcpchat_config *c = test_config(TCPCHAT_FRAMING_RAW);
    CHECK_INVALID(tcpchat_room_bind("127.0.0.1", 0, c, 0, &room));
    CHECK_ERR("line framing");
    CHECK_OK(tcpchat_config_set_framing(c, TCPCHAT_FRAMING_FRAME));
    CHECK_INVALID(tcpchat_room_bind("127.0.0.1", 0, c, 0, &room));
    CHECK(room == sentinel);

    CHECK_OK(tcpchat_config_set_framing(c, TCPCHAT_FRAMING_LINE));
    CHECK_OK(tcpchat_config_set_max_message_size(c, 100));
    room = NULL;
    CHECK_OK(tcpchat_room_bind("127.0.0.1", 0, c, 4096, &room));
    tcpchat_config_free(c);
    if (!room)
        return;

    /* The address, with the real port; a buffer too small. */
    char addr[TCPCHAT_ADDR_MAX], want[TCPCHAT_ADDR_MAX];
    size_t len = 0;
    int32_t port = 0;
    CHECK_OK(tcpchat_room_local_port(room, &port));
    CHECK_OK(tcpchat_room_local_addr(room, addr, sizeof addr, &len));
    snprintf(want, sizeof want, "127.0.0.1:%u", (unsigned)port);
    CHECK_MSG(addr, len, want);
    CHECK_ST(tcpchat_room_local_addr(room, addr, 4, &len), TCPCHAT_STATUS_BUFFER_TOO_SMALL);

    /* Posts that cannot be lines. */
    CHECK_INVALID(tcpchat_room_post(room, "two\nlines"));
    CHECK_ERR("newline");
    CHECK_INVALID(tcpchat_room_post(room, "caf\xc3\x28"));
    CHECK_ERR("UTF-8");
    char big[102];
    memset(big, 'x', 101);
    big[101] = '\0';
    CHECK_ST(tcpchat_room_post(room, big), TCPCHAT_STATUS_MESSAGE_TOO_LARGE);

    tcpchat_room_stats s = stats_of(room);
    CHECK(s.joined == 0 && s.refused == 0 && s.messages == 0 && s.dropped == 0 && s.online == 0);
    CHECK_OK(tcpchat_room_set_callback(room, NULL, NULL)); /* before it runs: fine */

    /* A room that never ran shuts down at once, twice. */
    CHECK_OK(tcpchat_room_shutdown(room));
    CHECK_OK(tcpchat_room_shutdown(room));
    CHECK_ST(tcpchat_room_run(room, &s), TCPCHAT_STATUS_CANCELLED);
    CHECK_ST(tcpchat_room_start(room), TCPCHAT_STATUS_CANCELLED);
    CHECK_ST(tcpchat_room_post(room, "late"), TCPCHAT_STATUS_CANCELLED);
    tcpchat_room_free(room);
    tcpchat_room_free(NULL);
}

int main(void)
{
    test_misuse();
    test_broadcast_in_order_from_many_senders();
    test_names_commands_and_notices();
    test_invalid_utf8_is_refused_to_the_sender();
    test_a_full_room_refuses_with_one_line();
    test_the_callback_sees_every_event();
    test_the_callback_can_post_and_shut_down();
    test_post_from_another_thread();
    test_run_until_shutdown_from_another_thread();
    test_terminal_controls_are_escaped_unless_raw();
    test_escape_text();
    return finish();
}

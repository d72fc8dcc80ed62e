/* See check.h. */
#define _GNU_SOURCE /* syscall(SYS_gettid), sched_yield */

#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int passed, failed;
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

static bool count(bool ok)
{
    atomic_fetch_add(ok ? &passed : &failed, 1);
    return ok;
}

bool check_true(bool ok, const char *what, const char *file, int line)
{
    if (!ok) {
        pthread_mutex_lock(&report_mu);
        fprintf(stderr, "%s:%d: FAILED: %s (last error: \"%s\")\n", file, line, what,
                tcpchat_last_error_message());
        pthread_mutex_unlock(&report_mu);
    }
    return count(ok);
}

bool check_status(tcpchat_status got, tcpchat_status want, const char *what, const char *file, int line)
{
    bool ok = got == want;
    if (!ok) {
        pthread_mutex_lock(&report_mu);
        fprintf(stderr, "%s:%d: FAILED: %s returned %s, expected %s (last error: \"%s\")\n", file, line,
                what, tcpchat_status_name(got), tcpchat_status_name(want), tcpchat_last_error_message());
        pthread_mutex_unlock(&report_mu);
    }
    return count(ok);
}

bool check_error_has(const char *needle, const char *file, int line)
{
    const char *msg = tcpchat_last_error_message();
    bool ok = msg != NULL && strstr(msg, needle) != NULL;
    if (!ok) {
        pthread_mutex_lock(&report_mu);
        fprintf(stderr, "%s:%d: FAILED: last error \"%s\" does not contain \"%s\"\n", file, line,
                msg ? msg : "(NULL)", needle);
        pthread_mutex_unlock(&report_mu);
    }
    return count(ok);
}

bool check_bytes(const void *got, size_t got_len, const char *want, const char *what, const char *file,
                 int line)
{
    bool ok = got_len == strlen(want) && memcmp(got, want, got_len) == 0;
    if (!ok) {
        pthread_mutex_lock(&report_mu);
        fprintf(stderr, "%s:%d: FAILED: %s is \"%.*s\" (%zu bytes), expected \"%s\"\n", file, line, what,
                (int)(got_len > 200 ? 200 : got_len), (const char *)got, got_len, want);
        pthread_mutex_unlock(&report_mu);
    }
    return count(ok);
}

int finish(void)
{
    printf("%d passed, %d failed\n", atomic_load(&passed), atomic_load(&failed));
    fflush(stdout);
    return atomic_load(&failed) == 0 ? 0 : 1;
}

tcpchat_config *test_config(tcpchat_framing framing)
{
    tcpchat_config *c = tcpchat_config_new();
    if (!c) {
        fprintf(stderr, "tcpchat_config_new failed\n");
        exit(3);
    }
    CHECK_OK(tcpchat_config_set_framing(c, framing));
    CHECK_OK(tcpchat_config_set_close_timeout_ms(c, 1000));
    CHECK_OK(tcpchat_config_set_connect_timeout_ms(c, 5000));
    return c;
}

tcpchat_server *bind_any(const tcpchat_config *config, uint16_t *port)
{
    tcpchat_server *s = NULL;
    if (!CHECK_OK(tcpchat_server_bind("127.0.0.1", 0, config, &s)))
        return NULL;
    int32_t p = 0;
    CHECK_OK(tcpchat_server_local_port(s, &p));
    CHECK(p > 0 && p <= 65535);
    if (port)
        *port = (uint16_t)p;
    return s;
}

bool conn_pair(const tcpchat_config *config, tcpchat_conn **client, tcpchat_conn **server_side)
{
    uint16_t port;
    tcpchat_server *s = bind_any(config, &port);
    if (!s)
        return false;
    /* A loopback connect completes through the listen backlog before the
     * accept, so one thread does both. */
    bool ok = CHECK_OK(tcpchat_conn_connect("127.0.0.1", port, config, client));
    if (ok && !CHECK_OK(tcpchat_server_accept(s, server_side))) {
        tcpchat_conn_free(*client);
        ok = false;
    }
    tcpchat_server_free(s);
    return ok;
}

void pair_free(tcpchat_conn *a, tcpchat_conn *b)
{
    tcpchat_conn_shutdown_write(a);
    tcpchat_conn_shutdown_write(b);
    tcpchat_conn_free(a);
    tcpchat_conn_free(b);
}

bool recv_expect(tcpchat_conn *conn, const char *want, const char *file, int line)
{
    uint8_t buf[4096];
    size_t len = 0;
    if (!check_status(tcpchat_conn_recv(conn, buf, sizeof buf, &len), TCPCHAT_STATUS_OK, "tcpchat_conn_recv",
                      file, line))
        return false;
    return check_bytes(buf, len, want, "received message", file, line);
}

tcpchat_status send_str(tcpchat_conn *conn, const char *s)
{
    return tcpchat_conn_send(conn, (const uint8_t *)s, strlen(s));
}

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int raw_listen(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("raw_listen");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int raw_accept(int listener)
{
    int fd;
    do
        fd = accept(listener, NULL, NULL);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        perror("raw_accept");
    return fd;
}

int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("raw_connect");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

bool raw_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

bool raw_read_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

void raw_reset(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        exit(3);
    }
    return t;
}

void event_init(struct event *e)
{
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->set = false;
}

void event_set(struct event *e)
{
    pthread_mutex_lock(&e->mu);
    e->set = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void event_wait(struct event *e)
{
    pthread_mutex_lock(&e->mu);
    while (!e->set)
        pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

void event_destroy(struct event *e)
{
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
}

int thread_id(void)
{
    return (int)syscall(SYS_gettid);
}

static bool is_wait_syscall(long nr)
{
#ifdef SYS_poll
    if (nr == SYS_poll)
        return true;
#endif
#ifdef SYS_ppoll
    if (nr == SYS_ppoll)
        return true;
#endif
    return false;
}

bool wait_until_blocked(int tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        FILE *f = fopen(path, "r");
        if (!f) {
            fprintf(stderr, "cannot read %s: the test cannot see where the thread waits\n", path);
            return false;
        }
        long nr = -1;
        int got = fscanf(f, "%ld", &nr); /* "running" when not in a system call */
        fclose(f);
        if (got == 1 && is_wait_syscall(nr))
            return true;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 20) {
            fprintf(stderr, "thread %d never blocked in poll\n", tid);
            return false;
        }
        sched_yield();
    }
}

/*
 * The C side of the tcpchat benchmark (issue 6): workloads A (ping-pong),
 * B (one-way streaming) and E (duplex) through the tcpchat C API and through
 * a raw POSIX sockets baseline (a buffered writer, a buffered reader that
 * parses many messages per read(), the same wire formats).
 *
 * benches/run.sh builds it (gcc -O2, linked against target/release) and runs
 * it once per measurement, collecting the `RESULT` line (one JSON object).
 * By hand:
 *
 *     bench_c pingpong --impl tcpchat --count 20000
 *     bench_c stream --impl raw --framing line --size 64 --count 1000000
 *     bench_c duplex --impl tcpchat --count 200000
 *
 * Duplex (E): one connection, one thread sending --count lines one call at
 * a time while another thread receives them back one at a time from an echo
 * peer (a raw byte echo, the same for both implementations): tcpchat through
 * ONE handle used by the two threads at once (tcpchat_conn_send on one,
 * tcpchat_conn_recv on the other), raw through one descriptor (one send()
 * of a whole line per message; the buffered line reader).
 *
 * Both ends run in this process (a thread each) over 127.0.0.1. Every
 * message is checked: ping-pong compares each echo with what was sent;
 * streaming checks the count, each length and the same order-sensitive
 * checksum as benches/throughput.rs (fold_add). A wrong count or checksum
 * prints FAILED and exits 1.
 *
 * malloc, calloc and realloc are wrapped to count the heap allocations each
 * thread makes (the library's Rust code allocates through them too), so the
 * result reports allocations per message in the steady state.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <tcpchat.h>

/* ----- counting allocations ------------------------------------------------ */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static __thread uint64_t t_allocs;

void *malloc(size_t n)
{
    t_allocs++;
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
    t_allocs++;
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
    t_allocs++;
    return __libc_realloc(p, n);
}

/* ----- messages and checksum (same definitions as throughput.rs) ------------ */

#define POOL 1024
#define FRAME 2
#define LINE 1

typedef struct {
    const char *workload, *impl;
    int framing;
    size_t size, count, warmup, trials;
    /* raw only: poll() this many descriptors (the socket and never-signalled
     * eventfds) before each read, as a cancellable wait does; 0 = plain
     * blocking read. */
    int poll_fds;
} opts_t;

static opts_t o;
static uint8_t *pool_data; /* POOL messages of o.size bytes, back to back */

static const uint8_t *pool_msg(size_t i) { return pool_data + (i % POOL) * o.size; }

static void make_pool(void)
{
    pool_data = __libc_malloc(POOL * o.size);
    for (size_t k = 0; k < POOL; k++)
        for (size_t j = 0; j < o.size; j++)
            pool_data[k * o.size + j] = (uint8_t)(' ' + (k * 31 + j * 7) % 95);
}

static size_t batch_size(void)
{
    size_t b = 65536 / o.size;
    return b < 1 ? 1 : b > 1024 ? 1024 : b;
}

#define FOLD_INIT 0xcbf29ce484222325ULL

static inline uint64_t fold_add(uint64_t f, const uint8_t *m, size_t n)
{
    uint64_t sum = 0, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, m + i, 8);
        sum += w;
    }
    if (i < n) {
        w = 0;
        memcpy(&w, m + i, n - i);
        sum += w;
    }
    return (f ^ sum ^ (uint64_t)n) * 0x100000001b3ULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void fail(const char *fmt, const char *detail)
{
    fprintf(stderr, "bench_c: FAILED: ");
    fprintf(stderr, fmt, detail);
    fprintf(stderr, "\n");
    exit(1);
}

static void check(tcpchat_status st, const char *what)
{
    if (st != TCPCHAT_STATUS_OK) {
        fprintf(stderr, "bench_c: FAILED: %s: %s: %s\n", what, tcpchat_status_name(st),
                tcpchat_last_error_message());
        exit(1);
    }
}

static void sys_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "bench_c: FAILED: %s: %s\n", what, strerror(errno));
        exit(1);
    }
}

/* Receiver bookkeeping shared by every implementation. */
typedef struct {
    size_t count, steady_at, bad_len_at;
    uint64_t fold, steady_base, steady_end;
    int bad_len;
} tally_t;

static inline void tally_take(tally_t *t, const uint8_t *m, size_t n)
{
    if (n != o.size && !t->bad_len) {
        t->bad_len = 1;
        t->bad_len_at = t->count;
    }
    t->fold = fold_add(t->fold, m, n);
    if (++t->count == t->steady_at)
        t->steady_base = t_allocs;
    if (t->count == o.count) /* the last message: before the end-of-stream status */
        t->steady_end = t_allocs;
}

/* ----- raw POSIX sockets --------------------------------------------------- */

typedef struct {
    int fd;
    uint8_t *rbuf, *wbuf;
    size_t rcap, rstart, rend, wlen, wcap;
    int eof;
    struct pollfd pfd[3];
} raw_t;

#define RAW_BUF 65536

static void raw_init(raw_t *r, int fd)
{
    int one = 1;
    sys_check(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "TCP_NODELAY");
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->rcap = RAW_BUF;
    r->rbuf = __libc_malloc(r->rcap);
    r->wcap = RAW_BUF;
    r->wbuf = __libc_malloc(r->wcap);
    r->pfd[0] = (struct pollfd){.fd = fd, .events = POLLIN};
    for (int i = 1; i < 3; i++) {
        r->pfd[i] = (struct pollfd){.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), .events = POLLIN};
        sys_check(r->pfd[i].fd >= 0, "eventfd");
    }
}

static void raw_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        sys_check(w > 0, "send");
        p += w;
        n -= (size_t)w;
    }
}

static void raw_flush(raw_t *r)
{
    raw_write_all(r->fd, r->wbuf, r->wlen);
    r->wlen = 0;
}

/* Append one message in wire form to the write buffer, flushing when full. */
static inline void raw_put(raw_t *r, const uint8_t *m, size_t n)
{
    size_t need = n + (o.framing == FRAME ? 4 : 1);
    if (r->wlen + need > r->wcap) {
        raw_flush(r);
        if (need > r->wcap) { /* bigger than the buffer: write it directly */
            if (o.framing == FRAME) {
                uint32_t h = htonl((uint32_t)n);
                raw_write_all(r->fd, (const uint8_t *)&h, 4);
                raw_write_all(r->fd, m, n);
            } else {
                raw_write_all(r->fd, m, n);
                raw_write_all(r->fd, (const uint8_t *)"\n", 1);
            }
            return;
        }
    }
    uint8_t *d = r->wbuf + r->wlen;
    if (o.framing == FRAME) {
        uint32_t h = htonl((uint32_t)n);
        memcpy(d, &h, 4);
        memcpy(d + 4, m, n);
    } else {
        memcpy(d, m, n);
        d[n] = '\n';
    }
    r->wlen += need;
}

/* The next complete message in the read buffer, without reading. */
static inline int raw_next(raw_t *r, const uint8_t **m, size_t *n)
{
    size_t avail = r->rend - r->rstart;
    uint8_t *p = r->rbuf + r->rstart;
    if (o.framing == FRAME) {
        if (avail < 4)
            return 0;
        uint32_t h;
        memcpy(&h, p, 4);
        size_t len = ntohl(h);
        if (avail - 4 < len) {
            if (4 + len > r->rcap) { /* grow for a big frame */
                r->rcap = 4 + len;
                r->rbuf = __libc_realloc(r->rbuf, r->rcap);
            }
            return 0;
        }
        *m = p + 4;
        *n = len;
        r->rstart += 4 + len;
        return 1;
    }
    uint8_t *nl = memchr(p, '\n', avail);
    if (!nl) {
        if (avail == r->rcap) {
            r->rcap *= 2;
            r->rbuf = __libc_realloc(r->rbuf, r->rcap);
        }
        return 0;
    }
    size_t len = (size_t)(nl - p);
    *m = p;
    *n = (len > 0 && p[len - 1] == '\r') ? len - 1 : len;
    r->rstart += len + 1;
    return 1;
}

/* Read once more (moving the partial message to the front); 0 at EOF. */
static int raw_fill(raw_t *r)
{
    if (r->rstart > 0) {
        memmove(r->rbuf, r->rbuf + r->rstart, r->rend - r->rstart);
        r->rend -= r->rstart;
        r->rstart = 0;
    }
    for (;;) {
        if (o.poll_fds > 0 && poll(r->pfd, (nfds_t)o.poll_fds, -1) < 0 && errno != EINTR)
            sys_check(0, "poll");
        ssize_t n = read(r->fd, r->rbuf + r->rend, r->rcap - r->rend);
        if (n < 0 && errno == EINTR)
            continue;
        sys_check(n >= 0, "read");
        r->rend += (size_t)n;
        return n > 0;
    }
}

/* Blocking: the next message, or 0 at end of stream. */
static int raw_recv(raw_t *r, const uint8_t **m, size_t *n)
{
    while (!raw_next(r, m, n))
        if (!raw_fill(r))
            return 0;
    return 1;
}

static int raw_listen(int *port)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    sys_check(l >= 0, "socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sys_check(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    sys_check(listen(l, 16) == 0, "listen");
    socklen_t len = sizeof a;
    sys_check(getsockname(l, (struct sockaddr *)&a, &len) == 0, "getsockname");
    *port = ntohs(a.sin_port);
    return l;
}

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sys_check(fd >= 0, "socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sys_check(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    return fd;
}

/* Shut down our write half, then read until the peer's end of stream (so
 * that closing sends no RST), then close. */
static void raw_close(raw_t *r)
{
    raw_flush(r);
    shutdown(r->fd, SHUT_WR);
    uint8_t sink[256];
    while (read(r->fd, sink, sizeof sink) > 0) {
    }
    close(r->fd);
    close(r->pfd[1].fd);
    close(r->pfd[2].fd);
    free(r->rbuf);
    free(r->wbuf);
}

/* ----- tcpchat through the C API --------------------------------------------- */

static tcpchat_config *make_config(void)
{
    tcpchat_config *c = tcpchat_config_new();
    if (!c)
        fail("%s", "tcpchat_config_new");
    check(tcpchat_config_set_framing(c, o.framing == FRAME ? TCPCHAT_FRAMING_FRAME : TCPCHAT_FRAMING_LINE),
          "set_framing");
    check(tcpchat_config_set_read_timeout_ms(c, 60000), "set_read_timeout_ms");
    return c;
}

typedef struct {
    int port;
    uint64_t allocs;
    pthread_barrier_t *go;
} peer_t;

/* ----- A: ping-pong ------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void pingpong_report(double *rtt, double total, uint64_t client_allocs, uint64_t server_allocs)
{
    size_t n = o.count;
    qsort(rtt, n, sizeof *rtt, cmp_double);
    size_t p99 = n * 99 / 100;
    if (p99 >= n)
        p99 = n - 1;
    printf("RESULT {\"lang\":\"c\",\"workload\":\"pingpong\",\"impl\":\"%s\",\"framing\":\"%s\",\"size\":%zu,"
           "\"count\":%zu,\"rtt_median_us\":%.3f,\"rtt_p99_us\":%.3f,\"rtt_min_us\":%.3f,"
           "\"round_trips_per_s\":%.1f,\"allocs_per_msg_client\":%.4f,\"allocs_per_msg_server\":%.4f,\"ok\":true}\n",
           o.impl, o.framing == FRAME ? "frame" : "line", o.size, n, rtt[n / 2] * 1e6, rtt[p99] * 1e6,
           rtt[0] * 1e6, (double)n / total, (double)client_allocs / (double)n,
           (double)server_allocs / (double)n);
}

static void *raw_echo(void *arg)
{
    int l = *(int *)arg;
    int fd = accept(l, NULL, NULL);
    sys_check(fd >= 0, "accept");
    raw_t r;
    raw_init(&r, fd);
    size_t n = 0, len;
    uint64_t base = 0;
    const uint8_t *m;
    for (;;) {
        if (n == o.warmup)
            base = t_allocs;
        if (!raw_recv(&r, &m, &len))
            break;
        raw_put(&r, m, len);
        /* Echo everything already received with one write. */
        while (raw_next(&r, &m, &len)) {
            raw_put(&r, m, len);
            n++;
        }
        raw_flush(&r);
        n++;
    }
    uint64_t used = t_allocs - base;
    raw_close(&r);
    close(l);
    return (void *)(uintptr_t)used;
}

static void pingpong_raw(void)
{
    int port;
    int l = raw_listen(&port);
    pthread_t t;
    pthread_create(&t, NULL, raw_echo, &l);
    raw_t r;
    raw_init(&r, raw_connect(port));
    double *rtt = __libc_malloc(o.count * sizeof(double));
    double started = 0;
    uint64_t base = 0;
    for (size_t i = 0; i < o.warmup + o.count; i++) {
        if (i == o.warmup) {
            base = t_allocs;
            started = now();
        }
        double t0 = now();
        const uint8_t *msg = pool_msg(i), *m;
        size_t len;
        raw_put(&r, msg, o.size);
        raw_flush(&r);
        if (!raw_recv(&r, &m, &len))
            fail("%s", "the echo server closed early");
        if (len != o.size || memcmp(m, msg, len) != 0)
            fail("%s", "an echo differs from the message sent");
        if (i >= o.warmup)
            rtt[i - o.warmup] = now() - t0;
    }
    double total = now() - started;
    uint64_t client_allocs = t_allocs - base;
    raw_close(&r);
    void *server_allocs;
    pthread_join(t, &server_allocs);
    pingpong_report(rtt, total, client_allocs, (uint64_t)(uintptr_t)server_allocs);
}

static void *tcpchat_echo(void *arg)
{
    tcpchat_server *srv = arg;
    tcpchat_conn *c = NULL;
    check(tcpchat_server_accept(srv, &c), "accept");
    size_t cap = 65536, len, n = 0;
    uint8_t *buf = __libc_malloc(cap);
    uint64_t base = 0;
    for (;;) {
        if (n == o.warmup)
            base = t_allocs;
        tcpchat_status st = tcpchat_conn_recv(c, buf, cap, &len);
        if (st == TCPCHAT_STATUS_CLOSED)
            break;
        check(st, "server recv");
        check(tcpchat_conn_send(c, buf, len), "server send");
        n++;
    }
    uint64_t used = t_allocs - base;
    check(tcpchat_conn_close(c), "server close");
    tcpchat_conn_free(c);
    free(buf);
    return (void *)(uintptr_t)used;
}

static void pingpong_tcpchat(void)
{
    tcpchat_config *cfg = make_config();
    tcpchat_server *srv = NULL;
    check(tcpchat_server_bind("127.0.0.1", 0, cfg, &srv), "bind");
    int32_t port;
    check(tcpchat_server_local_port(srv, &port), "local_port");
    pthread_t t;
    pthread_create(&t, NULL, tcpchat_echo, srv);
    tcpchat_conn *c = NULL;
    check(tcpchat_conn_connect("127.0.0.1", port, cfg, &c), "connect");
    size_t cap = 65536, len;
    uint8_t *buf = __libc_malloc(cap);
    double *rtt = __libc_malloc(o.count * sizeof(double));
    double started = 0;
    uint64_t base = 0;
    for (size_t i = 0; i < o.warmup + o.count; i++) {
        if (i == o.warmup) {
            base = t_allocs;
            started = now();
        }
        double t0 = now();
        const uint8_t *msg = pool_msg(i);
        check(tcpchat_conn_send(c, msg, o.size), "send");
        check(tcpchat_conn_recv(c, buf, cap, &len), "recv");
        if (len != o.size || memcmp(buf, msg, len) != 0)
            fail("%s", "an echo differs from the message sent");
        if (i >= o.warmup)
            rtt[i - o.warmup] = now() - t0;
    }
    double total = now() - started;
    uint64_t client_allocs = t_allocs - base;
    check(tcpchat_conn_close(c), "close");
    tcpchat_conn_free(c);
    void *server_allocs;
    pthread_join(t, &server_allocs);
    tcpchat_server_free(srv);
    tcpchat_config_free(cfg);
    free(buf);
    pingpong_report(rtt, total, client_allocs, (uint64_t)(uintptr_t)server_allocs);
}

/* ----- B: streaming ------------------------------------------------------------ */

/* The fastest of the --trials transfers (each checked), and every trial's rate:
 * on a shared machine noise only ever slows a transfer down. */
static struct {
    int have;
    double secs;
    tally_t t;
    uint64_t send_allocs;
    const char *impl;
    char rates[1024];
} best;

static void stream_report(const char *impl, double secs, tally_t *t, uint64_t send_allocs)
{
    if (t->count != o.count) {
        fprintf(stderr, "bench_c: FAILED: received %zu messages, sent %zu\n", t->count, o.count);
        exit(1);
    }
    if (t->bad_len) {
        fprintf(stderr, "bench_c: FAILED: message %zu has the wrong length\n", t->bad_len_at);
        exit(1);
    }
    uint64_t want = FOLD_INIT;
    for (size_t i = 0; i < o.count; i++)
        want = fold_add(want, pool_msg(i), o.size);
    if (t->fold != want) {
        fprintf(stderr, "bench_c: FAILED: checksum %#llx, expected %#llx\n", (unsigned long long)t->fold,
                (unsigned long long)want);
        exit(1);
    }
    size_t used = strlen(best.rates);
    snprintf(best.rates + used, sizeof best.rates - used, "%s%.1f", used ? "," : "", (double)t->count / secs);
    if (!best.have || secs < best.secs) {
        best.have = 1;
        best.secs = secs;
        best.t = *t;
        best.send_allocs = send_allocs;
        best.impl = impl;
    }
}

static void stream_print_as(const char *workload)
{
    tally_t *t = &best.t;
    double secs = best.secs;
    size_t steady = t->count - t->steady_at;
    printf("RESULT {\"lang\":\"c\",\"workload\":\"%s\",\"impl\":\"%s\",\"framing\":\"%s\",\"size\":%zu,"
           "\"count\":%zu,\"seconds\":%.6f,\"msgs_per_s\":%.1f,\"mb_per_s\":%.2f,\"checksum\":\"%#llx\","
           "\"allocs_per_msg_recv\":%.6f,\"allocs_per_msg_send\":%.6f,\"trials_msgs_per_s\":[%s],\"ok\":true}\n",
           workload, best.impl, o.framing == FRAME ? "frame" : "line", o.size, t->count, secs, (double)t->count / secs,
           (double)(t->count * o.size) / secs / 1e6, (unsigned long long)t->fold,
           (double)(t->steady_end - t->steady_base) / (double)(steady ? steady : 1),
           (double)best.send_allocs / (double)(o.count - o.count / 10 ? o.count - o.count / 10 : 1), best.rates);
}

static void *raw_sender(void *arg)
{
    peer_t *p = arg;
    raw_t r;
    raw_init(&r, raw_connect(p->port));
    pthread_barrier_wait(p->go);
    uint64_t base = t_allocs;
    for (size_t i = 0; i < o.count; i++) {
        if (i == o.count / 10)
            base = t_allocs;
        raw_put(&r, pool_msg(i), o.size);
    }
    raw_flush(&r);
    p->allocs = t_allocs - base;
    raw_close(&r);
    return NULL;
}

static void stream_raw(void)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    peer_t p = {.go = &go};
    int l = raw_listen(&p.port);
    pthread_t t;
    pthread_create(&t, NULL, raw_sender, &p);
    int fd = accept(l, NULL, NULL);
    sys_check(fd >= 0, "accept");
    raw_t r;
    raw_init(&r, fd);
    tally_t tl = {.fold = FOLD_INIT, .steady_at = o.count / 10};
    const uint8_t *m;
    size_t len;
    pthread_barrier_wait(&go);
    double t0 = now();
    for (;;) {
        while (raw_next(&r, &m, &len))
            tally_take(&tl, m, len);
        if (!raw_fill(&r))
            break;
    }
    double secs = now() - t0;
    raw_close(&r);
    close(l);
    pthread_join(t, NULL);
    stream_report("raw", secs, &tl, p.allocs);
}

static void *tcpchat_sender(void *arg)
{
    peer_t *p = arg;
    tcpchat_config *cfg = make_config();
    tcpchat_conn *c = NULL;
    check(tcpchat_conn_connect("127.0.0.1", p->port, cfg, &c), "connect");
    size_t batch = batch_size();
    const uint8_t **ptrs = __libc_malloc(batch * sizeof *ptrs);
    size_t *lens = __libc_malloc(batch * sizeof *lens);
    pthread_barrier_wait(p->go);
    uint64_t base = t_allocs;
    int steady = 0;
    for (size_t sent = 0; sent < o.count;) {
        if (!steady && sent >= o.count / 10) { /* the steady state: after the first tenth */
            base = t_allocs;
            steady = 1;
        }
        size_t n = o.count - sent < batch ? o.count - sent : batch;
        for (size_t k = 0; k < n; k++) {
            ptrs[k] = pool_msg(sent + k);
            lens[k] = o.size;
        }
        check(tcpchat_conn_send_many(c, ptrs, lens, n), "send_many");
        sent += n;
    }
    p->allocs = t_allocs - base;
    check(tcpchat_conn_close(c), "close");
    tcpchat_conn_free(c);
    tcpchat_config_free(cfg);
    free(ptrs);
    free(lens);
    return NULL;
}

/* recv_many: many messages per call (the default); per_msg: tcpchat_conn_recv
 * once per message. */
static void stream_tcpchat(int per_msg)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    peer_t p = {.go = &go};
    tcpchat_config *cfg = make_config();
    tcpchat_server *srv = NULL;
    check(tcpchat_server_bind("127.0.0.1", 0, cfg, &srv), "bind");
    int32_t port;
    check(tcpchat_server_local_port(srv, &port), "local_port");
    p.port = port;
    pthread_t t;
    pthread_create(&t, NULL, tcpchat_sender, &p);
    tcpchat_conn *c = NULL;
    check(tcpchat_server_accept(srv, &c), "accept");
    size_t cap = 262144, max = 1024, count, len;
    if (cap < o.size)
        cap = o.size;
    uint8_t *buf = __libc_malloc(cap);
    size_t *lens = __libc_malloc(max * sizeof *lens);
    tally_t tl = {.fold = FOLD_INIT, .steady_at = o.count / 10};
    pthread_barrier_wait(&go);
    double t0 = now();
    for (;;) {
        tcpchat_status st;
        if (per_msg) {
            st = tcpchat_conn_recv(c, buf, cap, &len);
            if (st == TCPCHAT_STATUS_CLOSED)
                break;
            check(st, "recv");
            tally_take(&tl, buf, len);
        } else {
            st = tcpchat_conn_recv_many(c, buf, cap, lens, max, &count);
            if (st == TCPCHAT_STATUS_CLOSED)
                break;
            check(st, "recv_many");
            const uint8_t *at = buf;
            for (size_t k = 0; k < count; k++) {
                tally_take(&tl, at, lens[k]);
                at += lens[k];
            }
        }
    }
    double secs = now() - t0;
    check(tcpchat_conn_close(c), "close");
    tcpchat_conn_free(c);
    pthread_join(t, NULL);
    tcpchat_server_free(srv);
    tcpchat_config_free(cfg);
    stream_report(per_msg ? "tcpchat-recv" : "tcpchat-recv_many", secs, &tl, p.allocs);
    free(buf);
    free(lens);
}

/* ----- E: duplex ------------------------------------------------------------- */

/* The duplex peer: accept one connection, write back every byte read (64 KiB
 * reads) until end of stream, then shut down and close. */
static void *byte_echo(void *arg)
{
    int l = *(int *)arg;
    int fd = accept(l, NULL, NULL);
    sys_check(fd >= 0, "echo accept");
    int one = 1;
    sys_check(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "TCP_NODELAY");
    uint8_t *buf = __libc_malloc(RAW_BUF);
    for (;;) {
        ssize_t n = read(fd, buf, RAW_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        sys_check(n >= 0, "echo read");
        if (n == 0)
            break;
        raw_write_all(fd, buf, (size_t)n);
    }
    shutdown(fd, SHUT_WR);
    close(fd);
    close(l);
    free(buf);
    return NULL;
}

typedef struct {
    tcpchat_conn *c; /* tcpchat */
    int fd;          /* raw */
    uint64_t allocs;
    pthread_barrier_t *go;
} duplex_sender_t;

static void *duplex_tcpchat_sender(void *arg)
{
    duplex_sender_t *p = arg;
    pthread_barrier_wait(p->go);
    uint64_t base = t_allocs;
    for (size_t i = 0; i < o.count; i++) {
        if (i == o.count / 10)
            base = t_allocs;
        check(tcpchat_conn_send(p->c, pool_msg(i), o.size), "send");
    }
    p->allocs = t_allocs - base;
    check(tcpchat_conn_shutdown_write(p->c), "shutdown_write");
    return NULL;
}

static void *duplex_raw_sender(void *arg)
{
    duplex_sender_t *p = arg;
    /* Each message with its newline, so that one send() carries a line. */
    size_t w = o.size + 1;
    uint8_t *wire = __libc_malloc(POOL * w);
    for (size_t k = 0; k < POOL; k++) {
        memcpy(wire + k * w, pool_msg(k), o.size);
        wire[k * w + o.size] = '\n';
    }
    pthread_barrier_wait(p->go);
    uint64_t base = t_allocs;
    for (size_t i = 0; i < o.count; i++) {
        if (i == o.count / 10)
            base = t_allocs;
        raw_write_all(p->fd, wire + (i % POOL) * w, w);
    }
    p->allocs = t_allocs - base;
    shutdown(p->fd, SHUT_WR);
    free(wire);
    return NULL;
}

static void duplex(int tcpchat)
{
    int port;
    int l = raw_listen(&port);
    pthread_t echo, sender;
    pthread_create(&echo, NULL, byte_echo, &l);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    duplex_sender_t p = {.go = &go, .fd = -1};
    tcpchat_config *cfg = NULL;
    raw_t r;
    if (tcpchat) {
        cfg = make_config();
        check(tcpchat_conn_connect("127.0.0.1", (uint16_t)port, cfg, &p.c), "connect");
        pthread_create(&sender, NULL, duplex_tcpchat_sender, &p);
    } else {
        p.fd = raw_connect(port);
        raw_init(&r, p.fd);
        pthread_create(&sender, NULL, duplex_raw_sender, &p);
    }
    size_t cap = 65536, len;
    uint8_t *buf = __libc_malloc(cap);
    const uint8_t *m;
    tally_t tl = {.fold = FOLD_INIT, .steady_at = o.count / 10};
    pthread_barrier_wait(&go);
    double t0 = now();
    for (;;) {
        if (tcpchat) {
            tcpchat_status st = tcpchat_conn_recv(p.c, buf, cap, &len);
            if (st == TCPCHAT_STATUS_CLOSED)
                break;
            check(st, "recv");
            tally_take(&tl, buf, len);
        } else {
            if (!raw_recv(&r, &m, &len))
                break;
            tally_take(&tl, m, len);
        }
    }
    double secs = now() - t0;
    pthread_join(sender, NULL);
    pthread_join(echo, NULL);
    if (tcpchat) {
        check(tcpchat_conn_close(p.c), "close");
        tcpchat_conn_free(p.c);
        tcpchat_config_free(cfg);
    } else {
        close(p.fd);
        close(r.pfd[1].fd);
        close(r.pfd[2].fd);
        free(r.rbuf);
        free(r.wbuf);
    }
    free(buf);
    stream_report(tcpchat ? "tcpchat-2threads" : "raw", secs, &tl, p.allocs);
}

/* ----- main ------------------------------------------------------------------- */

static void usage(const char *msg)
{
    fprintf(stderr,
            "bench_c: %s\nusage: bench_c pingpong|stream|duplex [--impl tcpchat|tcpchat-recv|raw|raw-poll1|raw-poll3] "
            "[--framing frame|line] [--size BYTES] [--count N] [--warmup N] [--trials N]\n"
            "  --trials N: stream N times (each checked) and report the fastest (default 1)\n",
            msg);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage("a workload is needed");
    o.workload = argv[1];
    int pp = strcmp(o.workload, "pingpong") == 0;
    int dx = strcmp(o.workload, "duplex") == 0;
    if (!pp && !dx && strcmp(o.workload, "stream") != 0)
        usage("unknown workload");
    o.impl = "tcpchat";
    o.framing = FRAME;
    o.size = 64;
    o.count = pp ? 20000 : dx ? 200000 : 1000000;
    o.warmup = 1000;
    o.trials = 1;
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc)
            usage("a flag needs a value");
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--impl"))
            o.impl = v;
        else if (!strcmp(f, "--framing") && !strcmp(v, "frame"))
            o.framing = FRAME;
        else if (!strcmp(f, "--framing") && !strcmp(v, "line"))
            o.framing = LINE;
        else if (!strcmp(f, "--size"))
            o.size = strtoul(v, NULL, 10);
        else if (!strcmp(f, "--count"))
            o.count = strtoul(v, NULL, 10);
        else if (!strcmp(f, "--warmup"))
            o.warmup = strtoul(v, NULL, 10);
        else if (!strcmp(f, "--trials"))
            o.trials = strtoul(v, NULL, 10);
        else
            usage("bad flag");
    }
    if (o.size == 0 || o.count == 0)
        usage("--size and --count must be positive");
    if (dx)
        o.framing = LINE;
    make_pool();
    int raw = !strcmp(o.impl, "raw") || !strcmp(o.impl, "raw-poll1") || !strcmp(o.impl, "raw-poll3");
    if (!raw && strcmp(o.impl, "tcpchat") && strcmp(o.impl, "tcpchat-recv"))
        usage("unknown --impl");
    if (!strcmp(o.impl, "raw-poll1"))
        o.poll_fds = 1;
    if (!strcmp(o.impl, "raw-poll3"))
        o.poll_fds = 3;
    if (pp)
        raw ? pingpong_raw() : pingpong_tcpchat();
    else if (dx) {
        for (size_t k = 0; k < (o.trials ? o.trials : 1); k++)
            duplex(!raw);
        stream_print_as("duplex");
    } else {
        for (size_t k = 0; k < (o.trials ? o.trials : 1); k++)
            raw ? stream_raw() : stream_tcpchat(!strcmp(o.impl, "tcpchat-recv"));
        stream_print_as("stream");
    }
    return 0;
}

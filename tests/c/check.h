/*
 * A tiny test harness shared by the C test programs, and the helpers they
 * all need: loopback servers on port 0, connection pairs, raw POSIX sockets
 * for a peer the library does not control, threads.
 *
 * Each CHECK counts one pass or one failure (from any thread); a failure
 * prints where and why, with the calling thread's last tcpchat error.
 * finish() prints `N passed, M failed` and gives the exit status.
 */
#ifndef TCPCHAT_TESTS_CHECK_H
#define TCPCHAT_TESTS_CHECK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tcpchat.h>

bool check_true(bool ok, const char *what, const char *file, int line);
bool check_status(tcpchat_status got, tcpchat_status want, const char *what, const char *file, int line);
bool check_error_has(const char *needle, const char *file, int line);
bool check_bytes(const void *got, size_t got_len, const char *want, const char *what, const char *file,
                 int line);

/* CHECK(cond): cond is true. */
#define CHECK(cond) check_true((cond), #cond, __FILE__, __LINE__)
/* CHECK_ST(call, status): call returns that status. */
#define CHECK_ST(call, want) check_status((call), (want), #call, __FILE__, __LINE__)
#define CHECK_OK(call) CHECK_ST(call, TCPCHAT_STATUS_OK)
#define CHECK_INVALID(call) CHECK_ST(call, TCPCHAT_STATUS_INVALID_ARGUMENT)
/* CHECK_ERR(text): tcpchat_last_error_message() contains text. */
#define CHECK_ERR(text) check_error_has((text), __FILE__, __LINE__)
/* CHECK_MSG(buf, len, "text"): the len bytes at buf are exactly "text". */
#define CHECK_MSG(buf, len, text) check_bytes((buf), (len), (text), #buf, __FILE__, __LINE__)

/* Print `N passed, M failed`; the exit status for main. */
int finish(void);

/* A config with test-friendly timeouts (close 1 s, connect 5 s) and the
 * given framing; free with tcpchat_config_free(). */
tcpchat_config *test_config(tcpchat_framing framing);

/* Bind 127.0.0.1 port 0 with `config` (may be NULL); the real port in *port. */
tcpchat_server *bind_any(const tcpchat_config *config, uint16_t *port);

/* A connected pair over loopback: *client from tcpchat_conn_connect, *server_side
 * from tcpchat_server_accept, both with `config`. Returns false on failure. */
bool conn_pair(const tcpchat_config *config, tcpchat_conn **client, tcpchat_conn **server_side);
/* Shut down both write halves, then free both: neither close waits. */
void pair_free(tcpchat_conn *a, tcpchat_conn *b);

/* Receive one message into a fresh static-free buffer of `cap` bytes and
 * check it is `want`. */
bool recv_expect(tcpchat_conn *conn, const char *want, const char *file, int line);
#define RECV_EXPECT(conn, want) recv_expect((conn), (want), __FILE__, __LINE__)
/* Send a NUL-terminated string as one message. */
tcpchat_status send_str(tcpchat_conn *conn, const char *s);

/* Raw POSIX sockets on 127.0.0.1 (-1 on failure). */
int raw_listen(uint16_t *port);
int raw_accept(int listener);
int raw_connect(uint16_t port);
bool raw_write_all(int fd, const void *buf, size_t len);
bool raw_read_exact(int fd, void *buf, size_t len);
/* Close with SO_LINGER 0: the peer gets a TCP RST. */
void raw_reset(int fd);

/* The calling thread's kernel id (Linux gettid). */
int thread_id(void);
/* Wait (spinning on /proc/self/task/TID/syscall, no sleep) until thread
 * `tid` is blocked in poll(), where every tcpchat call waits: proof that it
 * is inside the call. False if that cannot be seen within 20 s, or at all. */
bool wait_until_blocked(int tid);

/* Start a thread running fn(arg); aborts the test program if it cannot. */
pthread_t spawn(void *(*fn)(void *), void *arg);

/* A one-shot event one thread waits for and another sets. */
struct event {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool set;
};
void event_init(struct event *e);
void event_set(struct event *e);
void event_wait(struct event *e);
void event_destroy(struct event *e);

#endif /* TCPCHAT_TESTS_CHECK_H */

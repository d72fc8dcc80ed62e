/*
 * A chat room in C: every line a client sends reaches every other client, as
 * `NAME: TEXT`. Clients speak plain lines, so `nc` and `telnet` can join;
 * `/nick NAME`, `/who` and `/quit` are the commands. The transcript of
 * messages goes to stdout, logs (joins, leaves, drops) to stderr. Ctrl-C
 * (SIGINT) or SIGTERM closes every client gracefully and stops.
 *
 * The transcript waits for stdout in a bounded queue: at most 1,000 lines
 * and 1 MiB. When stdout cannot keep up (a pipe nobody reads, a paused
 * terminal), the lines that do not fit are dropped and counted, and
 * `* N lines not shown` is printed where they were once stdout takes the
 * lines before them; the room itself never waits for stdout. When the room
 * stops, what is still queued is written if stdout takes it within
 * 2 seconds. The same in the Rust and Python versions.
 *
 *     examples/c/build/chat_room --port 9000
 *     nc 127.0.0.1 9000        # in as many terminals as you like
 */
#define _POSIX_C_SOURCE 200809L /* pthread_sigmask, sigwait, clock_gettime */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <tcpchat.h>

#include "common.h"

static const char USAGE[] =
    "usage: chat_room [--host HOST] [--port PORT] [--max-clients N]\n"
    "                 [--allow RANGES] [--deny RANGES]\n"
    "                 [--idle-timeout SECS] [--max-per-address N] [--max-message-size BYTES]\n"
    "                 [--line-rate N]\n"
    "  --host HOST               address to listen on (default 127.0.0.1)\n"
    "  --port PORT               port to listen on; 0 picks a free one (default 8080)\n"
    "  --max-clients N           clients in the room at once; one more is told the room is full (default 1024)\n"
    "  --allow RANGES            accept only these addresses/CIDR ranges (comma-separated; repeatable)\n"
    "  --deny RANGES             refuse these addresses/CIDR ranges (deny wins over allow)\n"
    "  --idle-timeout SECS       close a client silent this long; 0 = never (default 300)\n"
    "  --max-per-address N       connections one address may have open at once; 0 = no limit (default)\n"
    "  --max-message-size BYTES  the longest line accepted (default 1048576)\n"
    "  --line-rate N             lines a second each member may send, in bursts of 10 N; 0 = no rate (default 50)\n"
    "The transcript (NAME: TEXT) goes to stdout through a queue of at most 1000 lines\n"
    "and 1 MiB; lines stdout cannot take in time are dropped and counted (`* N lines\n"
    "not shown`). Logs go to stderr.";

/* The most lines, and bytes of them, waiting for stdout; the same in the
 * Rust and Python versions. */
#define TRANSCRIPT_LINES 1000
#define TRANSCRIPT_BYTES ((size_t)1 << 20)
/* How long a stopped room waits for stdout to take the rest of the transcript. */
#define FINISH_WAIT_SECS 2

/*
 * The transcript. The callback runs on the room's thread, which must never
 * wait for a slow stdout: it queues each `NAME: TEXT` line, at most
 * TRANSCRIPT_LINES and TRANSCRIPT_BYTES of them, and a printer thread
 * writes them. A line that does not fit is counted as dropped after the
 * last one queued.
 */
struct line {
    struct line *next;
    uint64_t dropped_after; /* lines dropped right after this one: the queue was full */
    size_t len;
    char text[]; /* `NAME: TEXT` as members typed it (TEXT may hold NUL bytes) */
};
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct line *head, **tail, *last; /* last: the tail line, NULL when empty */
    size_t lines, bytes;              /* queued */
    bool done;                        /* the room has stopped: no more lines */
    bool printed;                     /* the printer has written every line and ended */
} transcript = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &transcript.head, NULL, 0, 0, false, false};

static void on_event(void *user_data, const tcpchat_room_event *event)
{
    (void)user_data;
    if (event->kind != TCPCHAT_ROOM_EVENT_MESSAGE)
        return;
    size_t name_len = strlen(event->name), len = name_len + 2 + event->text_len;
    pthread_mutex_lock(&transcript.mu);
    /* An empty queue takes any line, so that a long one is shown too. */
    bool fits = transcript.lines < TRANSCRIPT_LINES &&
                (transcript.lines == 0 || transcript.bytes + len <= TRANSCRIPT_BYTES);
    /* The strings are the library's, valid only during the call: copy. */
    struct line *l = fits ? malloc(sizeof *l + len) : NULL;
    if (!l) {
        if (transcript.last) /* full (or out of memory): count it */
            transcript.last->dropped_after++;
        pthread_mutex_unlock(&transcript.mu);
        return;
    }
    l->next = NULL;
    l->dropped_after = 0;
    l->len = len;
    memcpy(l->text, event->name, name_len);
    memcpy(l->text + name_len, ": ", 2);
    memcpy(l->text + name_len + 2, event->text, event->text_len);
    *transcript.tail = l;
    transcript.tail = &l->next;
    transcript.last = l;
    transcript.lines++;
    transcript.bytes += len;
    pthread_cond_signal(&transcript.cv); /* only the printer waits while the room runs */
    pthread_mutex_unlock(&transcript.mu);
}

/* The next line to print (the caller frees it); NULL once the room has
 * stopped and every line has been taken. */
static struct line *next_line(void)
{
    pthread_mutex_lock(&transcript.mu);
    while (!transcript.head && !transcript.done)
        pthread_cond_wait(&transcript.cv, &transcript.mu);
    struct line *l = transcript.head;
    if (l) {
        transcript.head = l->next;
        if (!transcript.head) {
            transcript.tail = &transcript.head;
            transcript.last = NULL;
        }
        transcript.lines--;
        transcript.bytes -= l->len;
    }
    pthread_mutex_unlock(&transcript.mu);
    return l;
}

/*
 * Print the transcript until it ends, with write() on descriptor 1 rather
 * than stdio: a printer blocked on a stdout nobody reads then holds no
 * stdio lock that exit() would wait for. Once stdout fails (closed), lines
 * are taken and dropped: the queue never stops draining.
 */
static void *print_transcript(void *arg)
{
    (void)arg;
    bool ok = true;
    struct line *l;
    while ((l = next_line()) != NULL) {
        /* Made safe for the terminal. */
        if (ok)
            ok = write_printable_line(STDOUT_FILENO, (const uint8_t *)l->text, l->len);
        if (ok && l->dropped_after > 0) {
            char notice[64];
            int n = snprintf(notice, sizeof notice, "* %" PRIu64 " lines not shown\n", l->dropped_after);
            ok = write_all(STDOUT_FILENO, notice, (size_t)n);
        }
        free(l);
    }
    pthread_mutex_lock(&transcript.mu);
    transcript.printed = true;
    pthread_cond_broadcast(&transcript.cv);
    pthread_mutex_unlock(&transcript.mu);
    return NULL;
}

/* The room has stopped: let the printer write what is left, if stdout takes
 * it within FINISH_WAIT_SECS (a stdout nobody reads must not keep the
 * program from exiting). True when the printer has ended. */
static bool finish_transcript(void)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline); /* pthread_cond_timedwait's clock */
    deadline.tv_sec += FINISH_WAIT_SECS;
    pthread_mutex_lock(&transcript.mu);
    transcript.done = true;
    pthread_cond_broadcast(&transcript.cv);
    int err = 0;
    while (!transcript.printed && err != ETIMEDOUT)
        err = pthread_cond_timedwait(&transcript.cv, &transcript.mu, &deadline);
    bool printed = transcript.printed;
    pthread_mutex_unlock(&transcript.mu);
    return printed;
}

static sigset_t stop_signals;

/* Wait for SIGINT or SIGTERM, then close the room (from this other thread). */
static void *wait_for_signal(void *room)
{
    int signal = 0;
    sigwait(&stop_signals, &signal);
    eprintf("chat_room: got signal %d, closing the room", signal);
    tcpchat_room_shutdown(room);
    return NULL;
}

/* A room holds one descriptor per client: lift the soft limit on open files
 * to the hard limit (often 1024 soft), as servers do. */
static void raise_fd_limit(void)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
}

int main(int argc, char **argv)
{
    struct flags flags = parse_flags(argc, argv, USAGE, FLAG_MAX_CLIENTS | FLAG_ACCESS | FLAG_LIMITS | FLAG_NO_FRAMING | FLAG_LINE_RATE);

    /* Block SIGINT and SIGTERM before any thread starts, so every thread
     * (the library's too) inherits the mask and the signals wait for sigwait
     * instead of killing the process. A closed stdout or stderr (`| head`,
     * a log pipe that died) is an error to see, not a SIGPIPE to die of:
     * the transcript's writes and the logs' then fail and are dropped. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    ignore_sigpipe();
    raise_fd_limit();

    tcpchat_config *config = tcpchat_config_new();
    if (!config)
        die("chat_room");
    apply_server_flags(config, &flags, USAGE);
    tcpchat_room *room = NULL;
    if (tcpchat_room_bind(flags.host, flags.port, config, 0, &room) != TCPCHAT_STATUS_OK)
        die("chat_room");
    tcpchat_config_free(config);
    if (flags.line_rate == 0 &&
        tcpchat_room_set_rate(room, 0, 0, 0, 0, 0) != TCPCHAT_STATUS_OK)
        die("chat_room");
    if (flags.line_rate > 0 &&
        tcpchat_room_set_rate(room, (uint32_t)flags.line_rate, (uint32_t)(flags.line_rate * 10),
                              32 * 1024, 64 * 1024, 10000) != TCPCHAT_STATUS_OK)
        die("chat_room");

    /* The first line on stderr, with the real port: scripts and tests read it. */
    char addr[TCPCHAT_ADDR_MAX];
    tcpchat_room_local_addr(room, addr, sizeof addr, NULL);
    eprintf("listening on %s", addr);
    warn_if_open(addr, &flags);
    tcpchat_set_log_callback(TCPCHAT_LOG_INFO, log_to_stderr, NULL);

    if (tcpchat_room_set_callback(room, on_event, NULL) != TCPCHAT_STATUS_OK)
        die("chat_room");
    pthread_t printer, stopper;
    if (pthread_create(&printer, NULL, print_transcript, NULL) != 0 ||
        pthread_create(&stopper, NULL, wait_for_signal, room) != 0) {
        fprintf(stderr, "chat_room: cannot start a thread\n");
        return 1;
    }

    tcpchat_room_stats stats;
    tcpchat_status st;
    /* A stop-and-continue (Ctrl-Z, fg) can interrupt the wait: go on. */
    while ((st = tcpchat_room_run(room, &stats)) == TCPCHAT_STATUS_INTERRUPTED)
        ;
    if (st != TCPCHAT_STATUS_OK)
        die("chat_room");

    /* The room has stopped: no more events. */
    if (finish_transcript())
        pthread_join(printer, NULL);
    /* else it is blocked on stdout, holding nothing exit() needs: leave it. */
    eprintf("chat_room: stopped; %" PRIu64 " joined, %" PRIu64 " refused, %" PRIu64 " messages, %" PRIu64
            " dropped",
            stats.joined, stats.refused, stats.messages, stats.dropped);

    pthread_join(stopper, NULL); /* it has returned: the shutdown came from it */
    tcpchat_room_free(room);
    return 0;
}

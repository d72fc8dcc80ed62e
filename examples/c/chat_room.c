/*
 * A chat room in C: every line a client sends reaches every other client, as
 * `NAME: TEXT`. Clients speak plain lines, so `nc` and `telnet` can join;
 * `/nick NAME`, `/who` and `/quit` are the commands. The transcript of
 * messages goes to stdout, logs (joins, leaves, drops) to stderr. Ctrl-C
 * (SIGINT) or SIGTERM closes every client gracefully and stops.
 *
 *     examples/c/build/chat_room --port 9000
 *     nc 127.0.0.1 9000        # in as many terminals as you like
 */
#define _POSIX_C_SOURCE 200809L /* pthread_sigmask, sigwait */

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <tcpchat.h>

#include "common.h"

static const char USAGE[] =
    "usage: chat_room [--host HOST] [--port PORT] [--max-clients N]\n"
    "                 [--allow RANGES] [--deny RANGES]\n"
    "                 [--idle-timeout SECS] [--max-per-address N] [--max-message-size BYTES]\n"
    "  --host HOST               address to listen on (default 127.0.0.1)\n"
    "  --port PORT               port to listen on; 0 picks a free one (default 8080)\n"
    "  --max-clients N           clients in the room at once; one more is told the room is full (default 1024)\n"
    "  --allow RANGES            accept only these addresses/CIDR ranges (comma-separated; repeatable)\n"
    "  --deny RANGES             refuse these addresses/CIDR ranges (deny wins over allow)\n"
    "  --idle-timeout SECS       close a client silent this long; 0 = never (default 300)\n"
    "  --max-per-address N       connections one address may have open at once; 0 = no limit (default)\n"
    "  --max-message-size BYTES  the longest line accepted (default 1048576)";

/*
 * The transcript. The callback runs on the room's thread, which must never
 * wait for a slow stdout: it queues each `NAME: TEXT` line, and a printer
 * thread writes them.
 */
struct line {
    struct line *next;
    size_t len;
    char text[]; /* `NAME: TEXT` as members typed it (TEXT may hold NUL bytes) */
};
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct line *head, **tail;
    bool done; /* the room has stopped: no more lines */
} transcript = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &transcript.head, false};

static void on_event(void *user_data, const tcpchat_room_event *event)
{
    (void)user_data;
    if (event->kind != TCPCHAT_ROOM_EVENT_MESSAGE)
        return;
    /* The strings are the library's, valid only during the call: copy. */
    size_t name_len = strlen(event->name), len = name_len + 2 + event->text_len;
    struct line *l = malloc(sizeof *l + len);
    if (!l)
        return; /* out of memory: this line is missing from the transcript */
    l->next = NULL;
    l->len = len;
    memcpy(l->text, event->name, name_len);
    memcpy(l->text + name_len, ": ", 2);
    memcpy(l->text + name_len + 2, event->text, event->text_len);
    pthread_mutex_lock(&transcript.mu);
    *transcript.tail = l;
    transcript.tail = &l->next;
    pthread_cond_signal(&transcript.cv);
    pthread_mutex_unlock(&transcript.mu);
}

static void *print_transcript(void *arg)
{
    (void)arg;
    bool ok = true; /* once stdout fails, the lines are dropped */
    for (;;) {
        pthread_mutex_lock(&transcript.mu);
        while (!transcript.head && !transcript.done)
            pthread_cond_wait(&transcript.cv, &transcript.mu);
        struct line *l = transcript.head;
        if (l) {
            transcript.head = l->next;
            if (!transcript.head)
                transcript.tail = &transcript.head;
        }
        pthread_mutex_unlock(&transcript.mu);
        if (!l)
            return NULL; /* done, and every line written */
        if (ok) { /* made safe for the terminal */
            fput_printable((const uint8_t *)l->text, l->len, stdout);
            putchar('\n');
            ok = fflush(stdout) == 0;
        }
        free(l);
    }
}

static sigset_t stop_signals;

/* Wait for SIGINT or SIGTERM, then close the room (from this other thread). */
static void *wait_for_signal(void *room)
{
    int signal = 0;
    sigwait(&stop_signals, &signal);
    fprintf(stderr, "chat_room: got signal %d, closing the room\n", signal);
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
    struct flags flags = parse_flags(argc, argv, USAGE, FLAG_MAX_CLIENTS | FLAG_ACCESS | FLAG_LIMITS | FLAG_NO_FRAMING);

    /* Block SIGINT and SIGTERM before any thread starts, so every thread
     * (the library's too) inherits the mask and the signals wait for sigwait
     * instead of killing the process. A closed stdout is an error to see,
     * not a SIGPIPE to die of. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    tcpchat_config *config = tcpchat_config_new();
    if (!config)
        die("chat_room");
    apply_server_flags(config, &flags, USAGE);
    tcpchat_room *room = NULL;
    if (tcpchat_room_bind(flags.host, flags.port, config, 0, &room) != TCPCHAT_STATUS_OK)
        die("chat_room");
    tcpchat_config_free(config);

    /* The first line on stderr, with the real port: scripts and tests read it. */
    char addr[TCPCHAT_ADDR_MAX];
    tcpchat_room_local_addr(room, addr, sizeof addr, NULL);
    fprintf(stderr, "listening on %s\n", addr);
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

    /* The room has stopped: no more events. Let the printer write what is left. */
    pthread_mutex_lock(&transcript.mu);
    transcript.done = true;
    pthread_cond_signal(&transcript.cv);
    pthread_mutex_unlock(&transcript.mu);
    pthread_join(printer, NULL);
    fprintf(stderr,
            "chat_room: stopped; %" PRIu64 " joined, %" PRIu64 " refused, %" PRIu64 " messages, %" PRIu64
            " dropped\n",
            stats.joined, stats.refused, stats.messages, stats.dropped);

    pthread_join(stopper, NULL); /* it has returned: the shutdown came from it */
    tcpchat_room_free(room);
    return 0;
}

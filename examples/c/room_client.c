/*
 * The room's own `nc` in C: join a chat room, print every line the room
 * sends as it arrives, and send every line typed on stdin as it is typed,
 * both at the same time.
 *
 *     examples/c/build/room_client --host 127.0.0.1 --port 8080
 *
 * Two threads share one connection: the library lets one thread receive on
 * a `tcpchat_conn *` while another sends on it, and neither waits for the
 * other.
 *  - The receiving thread prints each line (made safe for the terminal)
 *    and, when the room closes the connection, ends the whole program, even
 *    while the main thread still waits for stdin.
 *  - The main thread sends each stdin line; at the end of stdin it shuts
 *    down the write half (the room sees us leave and closes its side) and
 *    waits for the receiving thread to see that close.
 */
#define _POSIX_C_SOURCE 200809L /* getline */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include <tcpchat.h>

#include "common.h"

static const char USAGE[] =
    "usage: room_client [--host HOST] [--port PORT]\n"
    "  --host HOST      the room to join: a name, an IPv4 or an IPv6 address (default 127.0.0.1)\n"
    "  --port PORT      the room's port (default 8080)";

/*
 * End the program from the receiving thread. _exit, not exit: exit would
 * flush every stdio stream, stdin included, which the main thread holds
 * locked while it waits in getline. So flush stdout here ourselves.
 */
static _Noreturn void leave(int status)
{
    fflush(stdout);
    _exit(status);
}

/* The receiving thread: print each line as it arrives. Never returns. */
static void *print_lines(void *arg)
{
    tcpchat_conn *conn = arg;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        fputs("room_client: out of memory\n", stderr);
        leave(1);
    }
    for (;;) {
        tcpchat_status status = tcpchat_conn_recv(conn, buf, cap, &len);
        if (status == TCPCHAT_STATUS_OK) {
            fput_printable(buf, len, stdout);
            putchar('\n');
            if (fflush(stdout) != 0)
                leave(1); /* stdout is gone (a closed pipe) */
        } else if (status == TCPCHAT_STATUS_BUFFER_TOO_SMALL) {
            /* The line stays queued; len is the size it needs. */
            uint8_t *bigger = realloc(buf, len);
            if (!bigger) {
                fputs("room_client: out of memory\n", stderr);
                leave(1);
            }
            buf = bigger, cap = len;
        } else if (status == TCPCHAT_STATUS_INTERRUPTED) {
            continue; /* a stop-and-continue (Ctrl-Z, fg): go on */
        } else if (status == TCPCHAT_STATUS_CLOSED) {
            eprintf("* connection closed by the room");
            leave(0);
        } else {
            eprintf("room_client: %s", tcpchat_last_error_message());
            leave(1);
        }
    }
}

int main(int argc, char **argv)
{
    struct flags flags = parse_flags(argc, argv, USAGE, FLAG_NO_FRAMING);
    ignore_sigpipe(); /* a closed stdout or stderr is a failed write, not a death (common.h) */

    /* The room speaks lines: the default configuration (NULL). */
    tcpchat_conn *conn = NULL;
    if (tcpchat_conn_connect(flags.host, flags.port, NULL, &conn) != TCPCHAT_STATUS_OK)
        die("room_client");

    pthread_t receiver;
    if (pthread_create(&receiver, NULL, print_lines, conn) != 0) {
        fputs("room_client: cannot start the receiving thread\n", stderr);
        return 1;
    }

    /* The main thread: each stdin line goes out the moment it is typed. */
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t n;
    while ((n = getline(&line, &line_cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            n--;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (tcpchat_conn_send(conn, (const uint8_t *)line, (size_t)n) != TCPCHAT_STATUS_OK)
            die("room_client");
    }
    if (ferror(stdin)) {
        perror("room_client: reading stdin");
        return 1;
    }
    /*
     * The end of stdin: leave gracefully. The room reads the end of our
     * stream, sends what it still has for us, then closes its side, which
     * the receiving thread sees: it ends the program, so this join does
     * not return.
     */
    if (tcpchat_conn_shutdown_write(conn) != TCPCHAT_STATUS_OK)
        die("room_client");
    pthread_join(receiver, NULL);
    return 1;
}

/*
 * An echo server in C for many clients at once: every message a client sends
 * comes back to it unchanged. Ctrl-C (SIGINT) or SIGTERM stops it cleanly.
 *
 *     examples/c/build/echo_server --port 9000 --max-clients 100
 *     nc 127.0.0.1 9000
 */
#define _POSIX_C_SOURCE 200809L /* pthread_sigmask, sigwait */

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>

#include <tcpchat.h>

#include "common.h"

static const char USAGE[] =
    "usage: echo_server [--host HOST] [--port PORT] [--framing raw|line|frame] [--max-clients N]\n"
    "                   [--allow RANGES] [--deny RANGES]\n"
    "                   [--idle-timeout SECS] [--max-per-address N] [--max-message-size BYTES]\n"
    "  --host HOST               address to listen on (default 127.0.0.1)\n"
    "  --port PORT               port to listen on; 0 picks a free one (default 8080)\n"
    "  --framing F               wire format: raw, line or frame (default line)\n"
    "  --max-clients N           clients served at once; one more is told the server is full (default 1024)\n"
    "  --allow RANGES            accept only these addresses/CIDR ranges (comma-separated; repeatable)\n"
    "  --deny RANGES             refuse these addresses/CIDR ranges (deny wins over allow)\n"
    "  --idle-timeout SECS       close a client silent this long; 0 = never (default 300)\n"
    "  --max-per-address N       connections one address may have open at once; 0 = no limit (default)\n"
    "  --max-message-size BYTES  the longest message accepted (default 1048576)";

static sigset_t stop_signals;

/* Wait for SIGINT or SIGTERM, then stop the server (from this other thread). */
static void *wait_for_signal(void *server)
{
    int signal = 0;
    sigwait(&stop_signals, &signal);
    eprintf("echo_server: got signal %d, stopping", signal);
    tcpchat_server_shutdown(server);
    return NULL;
}

int main(int argc, char **argv)
{
    struct flags flags = parse_flags(argc, argv, USAGE, FLAG_MAX_CLIENTS | FLAG_ACCESS | FLAG_LIMITS);
    ignore_sigpipe(); /* a closed stdout or stderr is a failed write, not a death (common.h) */

    /* Block SIGINT and SIGTERM before any thread starts, so every thread
     * (the library's too) inherits the mask and the signals wait for sigwait
     * instead of killing the process. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    tcpchat_config *config = tcpchat_config_new();
    if (!config || tcpchat_config_set_framing(config, flags.framing) != TCPCHAT_STATUS_OK)
        die("echo_server");
    apply_server_flags(config, &flags, USAGE);
    tcpchat_server *server = NULL;
    if (tcpchat_server_bind(flags.host, flags.port, config, &server) != TCPCHAT_STATUS_OK)
        die("echo_server");
    tcpchat_config_free(config);

    char addr[TCPCHAT_ADDR_MAX];
    tcpchat_server_local_addr(server, addr, sizeof addr, NULL);
    eprintf("listening on %s", addr);
    warn_if_open(addr, &flags);
    tcpchat_set_log_callback(TCPCHAT_LOG_INFO, log_to_stderr, NULL);

    pthread_t stopper;
    if (pthread_create(&stopper, NULL, wait_for_signal, server) != 0) {
        fprintf(stderr, "echo_server: cannot start the signal thread\n");
        return 1;
    }

    tcpchat_echo_stats stats;
    if (tcpchat_server_serve_echo(server, &stats) != TCPCHAT_STATUS_OK)
        die("echo_server");
    eprintf("echo_server: stopped; served %" PRIu64 " clients, refused %" PRIu64 ", echoed %" PRIu64
            " messages, %" PRIu64 " client errors",
            stats.clients, stats.refused, stats.messages, stats.errors);

    pthread_join(stopper, NULL); /* it has returned: the shutdown came from it */
    tcpchat_server_free(server);
    return 0;
}

/*
 * The tutorial's chat client in C: connect, print what the server sends as
 * `server: MSG`, answer with the next line typed on stdin, and take turns
 * until one side sends BYE (stdin's end sends BYE too).
 *
 *     examples/c/build/chat_client --host 127.0.0.1 --port 8080
 */
#include <stdio.h>

#include <tcpchat.h>

#include "common.h"

static const char USAGE[] =
    "usage: chat_client [--host HOST] [--port PORT] [--framing raw|line|frame]\n"
    "  --host HOST      server to connect to: a name, an IPv4 or an IPv6 address (default 127.0.0.1)\n"
    "  --port PORT      server port (default 8080)\n"
    "  --framing F      wire format: raw, line or frame (default line); must match the server's";

int main(int argc, char **argv)
{
    struct flags flags = parse_flags(argc, argv, USAGE, 0);
    ignore_sigpipe(); /* a closed stdout or stderr is a failed write, not a death (common.h) */
    tcpchat_set_log_callback(TCPCHAT_LOG_INFO, log_to_stderr, NULL);

    tcpchat_config *config = tcpchat_config_new();
    if (!config || tcpchat_config_set_framing(config, flags.framing) != TCPCHAT_STATUS_OK)
        die("chat_client");
    tcpchat_conn *conn = NULL;
    if (tcpchat_conn_connect(flags.host, flags.port, config, &conn) != TCPCHAT_STATUS_OK)
        die("chat_client");
    tcpchat_config_free(config); /* the connection keeps its own copy */

    struct stdio_chat terminal;
    stdio_chat_init(&terminal, "server", "client> ");
    tcpchat_chat_callbacks callbacks = stdio_chat_callbacks(&terminal);
    /*
     * The server speaks first. Give it a second; if it is still silent, say
     * so and wait as long as it takes. A receive that times out loses
     * nothing, and it only ever happens while we wait for the server's turn,
     * which is where a session starts: so we simply start the session again.
     */
    tcpchat_status status = tcpchat_conn_set_read_timeout_ms(conn, 1000);
    if (status == TCPCHAT_STATUS_OK)
        status = tcpchat_conn_run_session(conn, TCPCHAT_ROLE_CLIENT, &callbacks, NULL);
    if (status == TCPCHAT_STATUS_TIMEOUT) {
        if (terminal.received == 0) {
            char addr[TCPCHAT_ADDR_MAX];
            tcpchat_conn_peer_addr(conn, addr, sizeof addr, NULL);
            eprintf("connected to %s, waiting for the server to speak first", addr);
        }
        status = tcpchat_conn_set_read_timeout_ms(conn, 0); /* 0 = for ever */
        if (status == TCPCHAT_STATUS_OK)
            status = tcpchat_conn_run_session(conn, TCPCHAT_ROLE_CLIENT, &callbacks, NULL);
    }
    if (status != TCPCHAT_STATUS_OK)
        die("chat_client");
    /* Close gracefully: everything we sent (BYE included) reaches the server. */
    if (tcpchat_conn_close(conn) != TCPCHAT_STATUS_OK)
        die("chat_client");

    stdio_chat_free(&terminal);
    tcpchat_conn_free(conn);
    return 0;
}

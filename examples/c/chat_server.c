/*
 * The tutorial's chat server in C: wait for a client, send it the first
 * line typed on stdin, print its reply as `client: MSG`, and take turns until
 * one side sends BYE (or stdin ends, which sends BYE). Then serve the next
 * client, unless --once. A client that leaves while the operator types ends
 * its session at once (`client left` on stderr): the callbacks wait for
 * stdin and the connection together (stdio_chat in common.c).
 *
 *     make -C examples/c
 *     examples/c/build/chat_server --port 8080
 *     examples/c/build/chat_client --port 8080     # in another terminal
 */
#include <stdio.h>

#include <tcpchat.h>

#include "common.h"

static const char USAGE[] =
    "usage: chat_server [--host HOST] [--port PORT] [--framing raw|line|frame] [--once]\n"
    "                   [--allow RANGES] [--deny RANGES]\n"
    "                   [--idle-timeout SECS] [--max-per-address N] [--max-message-size BYTES]\n"
    "  --host HOST               address to listen on (default 127.0.0.1)\n"
    "  --port PORT               port to listen on; 0 picks a free one (default 8080)\n"
    "  --framing F               wire format: raw, line or frame (default line)\n"
    "  --once                    exit after the first client instead of waiting for the next\n"
    "  --allow RANGES            accept only these addresses/CIDR ranges (comma-separated; repeatable)\n"
    "  --deny RANGES             refuse these addresses/CIDR ranges (deny wins over allow)\n"
    "  --idle-timeout SECS       end a session whose client is silent this long; 0 = never (default 300)\n"
    "  --max-per-address N       connections one address may have open at once; 0 = no limit (default)\n"
    "  --max-message-size BYTES  the longest message accepted (default 1048576)";

int main(int argc, char **argv)
{
    struct flags flags = parse_flags(argc, argv, USAGE, FLAG_ONCE | FLAG_ACCESS | FLAG_LIMITS);
    ignore_sigpipe(); /* a closed stdout or stderr is a failed write, not a death (common.h) */

    tcpchat_config *config = tcpchat_config_new();
    if (!config || tcpchat_config_set_framing(config, flags.framing) != TCPCHAT_STATUS_OK)
        die("chat_server");
    apply_server_flags(config, &flags, USAGE);
    tcpchat_server *server = NULL;
    if (tcpchat_server_bind(flags.host, flags.port, config, &server) != TCPCHAT_STATUS_OK)
        die("chat_server");
    tcpchat_config_free(config); /* the server keeps its own copy */

    /* The first line on stderr, with the real port: scripts and tests read it. */
    char addr[TCPCHAT_ADDR_MAX];
    tcpchat_server_local_addr(server, addr, sizeof addr, NULL);
    eprintf("listening on %s", addr);
    warn_if_open(addr, &flags);
    tcpchat_set_log_callback(TCPCHAT_LOG_INFO, log_to_stderr, NULL);

    /* Messages to send come from stdin; received ones go to stdout. */
    struct stdio_chat terminal;
    stdio_chat_init(&terminal, "client", "server> ");
    tcpchat_chat_callbacks callbacks = stdio_chat_callbacks(&terminal);
    tcpchat_status status = tcpchat_server_serve_chat(server, &callbacks, flags.once);
    if (status != TCPCHAT_STATUS_OK)
        die("chat_server");

    stdio_chat_free(&terminal);
    tcpchat_server_free(server);
    return 0;
}

/*
 * What the C example programs share: a tiny flag parser, the log callback
 * and the chat callbacks that talk to the terminal (stdin and stdout).
 * Each example uses only part of it.
 */
#ifndef TCPCHAT_EXAMPLES_COMMON_H
#define TCPCHAT_EXAMPLES_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <tcpchat.h>

/* The flags of the example programs, with their defaults. */
struct flags {
    const char *host;        /* --host (127.0.0.1) */
    int port;                /* --port (8080; 0 = any free port) */
    tcpchat_framing framing; /* --framing raw|line|frame (line) */
    bool once;               /* --once */
    size_t max_clients;      /* --max-clients (0 = the library's default) */
    const char *allow;       /* --allow RANGES, repeatable (NULL = everyone) */
    const char *deny;        /* --deny RANGES, repeatable (NULL = nobody) */
    /* The limits; -1 when not given (the library's default applies). */
    int64_t idle_timeout;     /* --idle-timeout SECS (0 = none) */
    int64_t max_per_address;  /* --max-per-address N (0 = no limit) */
    int64_t max_message_size; /* --max-message-size BYTES */
    int64_t line_rate;        /* --line-rate N (chat_room; 0 = no rate) */
};

/*
 * The optional flags a program accepts besides --host, --port, --framing:
 * FLAG_ACCESS is --allow and --deny, FLAG_LIMITS --idle-timeout,
 * --max-per-address and --max-message-size; FLAG_NO_FRAMING refuses
 * --framing (the chat room speaks lines only).
 */
enum { FLAG_ONCE = 1, FLAG_MAX_CLIENTS = 2, FLAG_ACCESS = 4, FLAG_NO_FRAMING = 8, FLAG_LIMITS = 16,
       FLAG_LINE_RATE = 32 /* --line-rate N (lines a second per room member) */ };

/*
 * Parse argv (`--flag value` or `--flag=value`). `--help` prints `usage` on
 * stdout and exits 0; a bad flag prints the problem and `usage` on stderr
 * and exits 2.
 */
struct flags parse_flags(int argc, char **argv, const char *usage, unsigned optional);

/*
 * Apply the server flags given (--max-clients, --allow, --deny and the
 * limits) to `config`; a value the library refuses prints its message and
 * `usage` on stderr and exits 2.
 */
void apply_server_flags(tcpchat_config *config, const struct flags *flags, const char *usage);

/*
 * Print a warning on stderr when a server bound to `addr` ("IP:PORT", as
 * tcpchat_server_local_addr writes it) listens on every address (0.0.0.0,
 * ::) and no --allow list limits who may connect.
 */
void warn_if_open(const char *addr, const struct flags *flags);

/*
 * A tcpchat_log_callback writing `tcpchat: LEVEL: MESSAGE` lines to stderr,
 * as the Rust library's stderr_logger does: it never waits (it runs on the
 * library's threads, the room's loop among them) and never fails the
 * program. A record is written, in one write of at most 4,000 bytes, only
 * when stderr can take it at once, and dropped otherwise (a full pipe
 * nobody reads, a paused terminal, a closed pipe). The examples ignore
 * SIGPIPE, so a closed stderr is a failed write, not a death.
 */
void log_to_stderr(void *user_data, tcpchat_log_level level, const char *message);

/*
 * fprintf(stderr, ...) for the examples' own lines (a newline is added),
 * which never waits long: the line goes to stderr in one write when stderr
 * can take it within STDERR_WAIT_MS, and is dropped otherwise, or when the
 * write fails (stderr closed, or full and nobody reading it). A write that
 * waited for ever on the signal thread would leave SIGTERM ignored.
 */
#define STDERR_WAIT_MS 1000 /* the same in Rust and Python */
void eprintf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Write all `len` bytes of `buf` to descriptor `fd`, going on after a
 * signal; false when a write fails (EPIPE with SIGPIPE ignored, ...). */
bool write_all(int fd, const void *buf, size_t len);

/* Write `len` bytes of peer text, made safe for a terminal as by
 * fput_printable, and a newline to descriptor `fd` with write() (no stdio
 * lock held while it waits); false when the write fails. */
bool write_printable_line(int fd, const uint8_t *msg, size_t len);

/*
 * Ignore SIGPIPE for the whole program; every example calls this first.
 * The library ignores SIGPIPE for its own writes only (sockets, the log):
 * the examples' own writes to a closed stdout or stderr (`chat_room 2>&1 |
 * head`, a supervisor whose log pipe died) would otherwise kill the
 * process, dropping every client. Ignored, such a write fails with EPIPE:
 * a log line is dropped, the room's transcript stops, a chat program whose
 * stdout is gone ends with an error; as in Rust and Python, whose runtimes
 * ignore SIGPIPE too.
 */
void ignore_sigpipe(void);

/* Print `PROGRAM: <the calling thread's last tcpchat error>` and exit 1. */
void die(const char *program);

/*
 * Chat callbacks for a terminal or a pipe: each message to send is the next
 * line of stdin (its end says BYE); each received one is printed on stdout
 * as `PEER: MSG`, made safe for the terminal (fput_printable). The prompt
 * goes to stderr, only when stdin is a terminal.
 * While the operator types, the peer is watched too
 * (tcpchat_session_wait_input): when it leaves, `PEER left` is printed on
 * stderr and the session ends at once (a server goes on to its next
 * client). So stdin is read with read(2) into the chat's own buffer, never
 * through stdio, whose buffer could hold a line poll() cannot see.
 * Fill one with stdio_chat_init() and pass stdio_chat_callbacks() of it.
 */
struct stdio_chat {
    const char *peer;   /* "client" or "server" */
    const char *prompt; /* NULL when stdin is not a terminal */
    char *buf;          /* what was read from stdin: buf[start..end) is not returned yet */
    size_t start, end, cap;
    bool eof;           /* stdin has ended */
    uint64_t received;  /* how many messages have been printed */
};
void stdio_chat_init(struct stdio_chat *chat, const char *peer, const char *prompt);
tcpchat_chat_callbacks stdio_chat_callbacks(struct stdio_chat *chat);
void stdio_chat_free(struct stdio_chat *chat);

/*
 * Write `len` bytes of peer text to `out`, made safe for a terminal
 * (CONTRACT.md, "Text that reaches a terminal"): what could move the
 * cursor, clear the screen, reorder or hide text is written in a visible
 * notation (`\x1b`, `\u{202e}`, `\xff` for a byte that is not UTF-8), the
 * rest as it is. The library's rule, tcpchat_escape_text(), which the room
 * applies to what it relays and the Rust and Python examples call too.
 */
void fput_printable(const uint8_t *msg, size_t len, FILE *out);

#endif /* TCPCHAT_EXAMPLES_COMMON_H */

/* See common.h. */
#define _POSIX_C_SOURCE 200809L /* isatty */

#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static void bad_usage(const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s\n", usage);
    exit(2);
}

/* A decimal number from 0 to max, the whole string. */
static bool parse_number(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return false;
    unsigned long n = strtoul(s, &end, 10);
    if (*end != '\0' || n > max)
        return false;
    *out = n;
    return true;
}

/*
 * A repeated --allow or --deny adds to the list: "OLD,MORE". The joined list
 * is kept in *own (a static, so it lives until exit), replacing the last one.
 */
static const char *append_ranges(char **own, const char *old, const char *more)
{
    if (!old)
        return more;
    size_t len = strlen(old) + 1 + strlen(more) + 1;
    char *both = malloc(len);
    if (!both) {
        fputs("error: out of memory\n", stderr);
        exit(1);
    }
    snprintf(both, len, "%s,%s", old, more);
    free(*own); /* old, when it was the last joined list */
    *own = both;
    return both;
}

static char *allow_list, *deny_list;

struct flags parse_flags(int argc, char **argv, const char *usage, unsigned optional)
{
    struct flags f = {"127.0.0.1", 8080, TCPCHAT_FRAMING_LINE, false, 0, NULL, NULL, -1, -1, -1, -1};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            puts(usage);
            exit(0);
        }
        /* Split `--name=value`. */
        const char *eq = strchr(arg, '=');
        size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *value = eq ? eq + 1 : NULL;
#define IS(flag) (n == strlen(flag) && strncmp(arg, flag, n) == 0)
        if (IS("--once") && (optional & FLAG_ONCE)) {
            if (value)
                bad_usage(usage, "--once takes no value");
            f.once = true;
            continue;
        }
        if (!IS("--host") && !IS("--port") &&
            !(IS("--framing") && !(optional & FLAG_NO_FRAMING)) &&
            !(IS("--max-clients") && (optional & FLAG_MAX_CLIENTS)) &&
            !((IS("--allow") || IS("--deny")) && (optional & FLAG_ACCESS)) &&
            !((IS("--idle-timeout") || IS("--max-per-address") || IS("--max-message-size")) &&
              (optional & FLAG_LIMITS)) &&
            !(IS("--line-rate") && (optional & FLAG_LINE_RATE)))
            bad_usage(usage, "unknown flag \"%s\"", arg);
        if (!value) {
            if (i + 1 >= argc)
                bad_usage(usage, "%.*s needs a value", (int)n, arg);
            value = argv[++i];
        }
        unsigned long num;
        if (IS("--host")) {
            f.host = value;
        } else if (IS("--port")) {
            if (!parse_number(value, 65535, &num))
                bad_usage(usage, "--port: bad port \"%s\"", value);
            f.port = (int)num;
        } else if (IS("--framing")) {
            if (strcmp(value, "raw") == 0)
                f.framing = TCPCHAT_FRAMING_RAW;
            else if (strcmp(value, "line") == 0)
                f.framing = TCPCHAT_FRAMING_LINE;
            else if (strcmp(value, "frame") == 0)
                f.framing = TCPCHAT_FRAMING_FRAME;
            else
                bad_usage(usage, "--framing: expected raw, line or frame, got \"%s\"", value);
        } else if (IS("--allow")) {
            f.allow = append_ranges(&allow_list, f.allow, value);
        } else if (IS("--deny")) {
            f.deny = append_ranges(&deny_list, f.deny, value);
        } else if (IS("--idle-timeout") || IS("--max-per-address") || IS("--max-message-size") ||
                   IS("--line-rate")) {
            if (!parse_number(value, 4294967295UL, &num))
                bad_usage(usage, "%.*s: expected a whole number from 0 to 4294967295, got \"%s\"",
                          (int)n, arg, value);
            if (IS("--idle-timeout"))
                f.idle_timeout = (int64_t)num;
            else if (IS("--max-per-address"))
                f.max_per_address = (int64_t)num;
            else if (IS("--line-rate"))
                f.line_rate = (int64_t)num;
            else
                f.max_message_size = (int64_t)num;
        } else { /* --max-clients */
            if (!parse_number(value, (unsigned long)-1, &num) || num == 0)
                bad_usage(usage, "--max-clients: expected a positive number, got \"%s\"", value);
            f.max_clients = (size_t)num;
        }
#undef IS
    }
    return f;
}

/* A setting the library refused is a usage error; its message names the value. */
static void usage_unless_ok(tcpchat_status status, const char *usage)
{
    if (status != TCPCHAT_STATUS_OK)
        bad_usage(usage, "%s", tcpchat_last_error_message());
}

void apply_server_flags(tcpchat_config *config, const struct flags *flags, const char *usage)
{
    if (flags->allow)
        usage_unless_ok(tcpchat_config_set_allow(config, flags->allow), usage);
    if (flags->deny)
        usage_unless_ok(tcpchat_config_set_deny(config, flags->deny), usage);
    if (flags->max_clients)
        usage_unless_ok(tcpchat_config_set_max_clients(config, flags->max_clients), usage);
    if (flags->idle_timeout >= 0) /* 0 = none, as the library's 0 ms */
        usage_unless_ok(tcpchat_config_set_idle_timeout_ms(config, (uint64_t)flags->idle_timeout * 1000), usage);
    if (flags->max_per_address >= 0)
        usage_unless_ok(tcpchat_config_set_max_per_address(config, (size_t)flags->max_per_address), usage);
    if (flags->max_message_size >= 0)
        usage_unless_ok(tcpchat_config_set_max_message_size(config, (size_t)flags->max_message_size), usage);
}

void warn_if_open(const char *addr, const struct flags *flags)
{
    const char *every = strncmp(addr, "0.0.0.0:", 8) == 0 ? "0.0.0.0"
                        : strncmp(addr, "[::]:", 5) == 0  ? "::"
                                                          : NULL;
    /* An --allow list with no entry at all ("" or ",") allows everyone too. */
    bool allow_list = flags->allow && flags->allow[strspn(flags->allow, ", ")] != '\0';
    if (every && !allow_list)
        eprintf("warning: listening on every address (%s) with no --allow list: "
                "anyone who can reach this machine can connect",
                every);
}

/* The longest record log_to_stderr writes, newline included: within one
 * pipe page, so such a write never waits once poll() says there is room. */
#define MAX_RECORD 4000

/* Whether stderr can take a write within `ms` milliseconds (a pipe then has
 * a page free: a line shorter than that is written without waiting). */
static bool stderr_writable(int ms)
{
    struct pollfd p = {STDERR_FILENO, POLLOUT, 0};
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ; /* a signal with a handler: wait again (a line is not worth more care) */
    return r == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP | POLLNVAL));
}

void eprintf(const char *fmt, ...)
{
    char line[MAX_RECORD + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap); /* room for the newline */
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line - 2 ? (size_t)n : sizeof line - 2; /* cut if longer */
    line[len++] = '\n';
    if (stderr_writable(STDERR_WAIT_MS))
        (void)write_all(STDERR_FILENO, line, len); /* a failed write: dropped */
}

void log_to_stderr(void *user_data, tcpchat_log_level level, const char *message)
{
    static const char *const names[] = {"off", "error", "warn", "info", "debug"};
    (void)user_data;
    char line[MAX_RECORD + 1];
    int n = snprintf(line, sizeof line, "tcpchat: %s: %s\n", level <= TCPCHAT_LOG_DEBUG ? names[level] : "?",
                     message);
    if (n < 0)
        return;
    size_t len = (size_t)n;
    if (len > MAX_RECORD) { /* cut at a character boundary, and say so */
        size_t cut = MAX_RECORD - 5;
        while (cut > 0 && ((unsigned char)line[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(line + cut, " ...\n", 5);
        len = cut + 5;
    }
    if (!stderr_writable(0))
        return; /* stderr cannot take it now: dropped */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* a failed or short write: dropped too */
}

bool write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

bool write_printable_line(int fd, const uint8_t *msg, size_t len)
{
    /* As fput_printable, with room for the newline in place of the NUL. */
    char small[1024], *shown = small;
    size_t n = 0;
    tcpchat_status status = tcpchat_escape_text(msg, len, shown, sizeof small, &n);
    if (status == TCPCHAT_STATUS_BUFFER_TOO_SMALL && (shown = malloc(n)) != NULL)
        status = tcpchat_escape_text(msg, len, shown, n, &n);
    bool ok;
    if (status == TCPCHAT_STATUS_OK) {
        shown[n] = '\n'; /* over the NUL */
        ok = write_all(fd, shown, n + 1);
    } else {
        static const char oom[] = "(not shown: out of memory)\n"; /* never the raw bytes */
        ok = write_all(fd, oom, sizeof oom - 1);
    }
    if (shown != small && shown != NULL)
        free(shown);
    return ok;
}

void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

void die(const char *program)
{
    eprintf("%s: %s", program, tcpchat_last_error_message());
    exit(1);
}

/*
 * next_message: the next line of stdin, without its line ending. stdin is
 * read with read(2) into the chat's own buffer, never through stdio: a
 * FILE's buffer could hold the next line while descriptor 0 has nothing
 * more to say, and tcpchat_session_wait_input() watches the descriptor.
 */
static int next_line(void *user_data, const uint8_t **msg, size_t *len)
{
    struct stdio_chat *chat = user_data;
    if (chat->prompt) {
        fputs(chat->prompt, stderr);
        fflush(stderr);
    }
    /* Drop the line returned last time (the library has copied it). */
    memmove(chat->buf, chat->buf + chat->start, chat->end - chat->start);
    chat->end -= chat->start;
    chat->start = 0;
    for (;;) {
        char *nl = chat->end ? memchr(chat->buf, '\n', chat->end) : NULL;
        if (nl || (chat->eof && chat->end > 0)) {
            /* A line; at the end of input, what is left counts as one too. */
            size_t n = nl ? (size_t)(nl - chat->buf) : chat->end;
            chat->start = nl ? n + 1 : n;
            if (n > 0 && chat->buf[n - 1] == '\r')
                n--;
            *msg = (const uint8_t *)chat->buf; /* stays ours until the next call */
            *len = n;
            return 0;
        }
        if (chat->eof) {
            *msg = NULL; /* end of input: the library sends BYE */
            return 0;
        }
        /* Nothing buffered: wait for stdin, or for the peer to leave. */
        tcpchat_status status = tcpchat_session_wait_input(STDIN_FILENO);
        if (status == TCPCHAT_STATUS_CLOSED) {
            fprintf(stderr, "%s left\n", chat->peer);
            return status; /* the session ends as the peer's close */
        }
        if (status != TCPCHAT_STATUS_OK && status != TCPCHAT_STATUS_INVALID_ARGUMENT)
            return status; /* cancelled, interrupted: passed on */
        /* (INVALID_ARGUMENT: not inside a session, or stdin is not open: just read.) */
        if (chat->cap - chat->end < 1024) {
            size_t cap = chat->cap ? 2 * chat->cap : 4096;
            char *grown = realloc(chat->buf, cap);
            if (!grown) {
                fputs("reading stdin: out of memory\n", stderr);
                return -1; /* fails the session with TCPCHAT_STATUS_CALLBACK */
            }
            chat->buf = grown;
            chat->cap = cap;
        }
        ssize_t got = read(STDIN_FILENO, chat->buf + chat->end, chat->cap - chat->end);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EBADF) {
            chat->eof = true; /* stdin is not open: as if empty */
            continue;
        }
        if (got < 0) {
            perror("reading stdin");
            return -1; /* fails the session with TCPCHAT_STATUS_CALLBACK */
        }
        if (got == 0)
            chat->eof = true;
        chat->end += (size_t)got;
    }
}

/* on_message: print `PEER: MSG`. `msg` is the library's, valid during the call. */
static int print_message(void *user_data, const uint8_t *msg, size_t len)
{
    struct stdio_chat *chat = user_data;
    /* A raw peer such as nc sends its newline too: do not print it twice. */
    if (len > 0 && msg[len - 1] == '\n')
        len--;
    if (len > 0 && msg[len - 1] == '\r')
        len--;
    chat->received++;
    printf("%s: ", chat->peer);
    fput_printable(msg, len, stdout);
    putchar('\n');
    return fflush(stdout) == 0 ? 0 : -1;
}

void stdio_chat_init(struct stdio_chat *chat, const char *peer, const char *prompt)
{
    chat->peer = peer;
    chat->prompt = isatty(STDIN_FILENO) ? prompt : NULL;
    chat->buf = NULL;
    chat->start = chat->end = chat->cap = 0;
    chat->eof = false;
    chat->received = 0;
}

tcpchat_chat_callbacks stdio_chat_callbacks(struct stdio_chat *chat)
{
    tcpchat_chat_callbacks cb = {0};
    cb.user_data = chat;
    cb.next_message = next_line;
    cb.on_message = print_message;
    return cb;
}

void stdio_chat_free(struct stdio_chat *chat)
{
    free(chat->buf);
    chat->buf = NULL;
}

void fput_printable(const uint8_t *msg, size_t len, FILE *out)
{
    /* Most lines fit here; a longer one gets a buffer of the size the
     * library says it needs. */
    char small[1024], *shown = small;
    size_t n = 0;
    tcpchat_status status = tcpchat_escape_text(msg, len, shown, sizeof small, &n);
    if (status == TCPCHAT_STATUS_BUFFER_TOO_SMALL && (shown = malloc(n)) != NULL)
        status = tcpchat_escape_text(msg, len, shown, n, &n);
    if (status == TCPCHAT_STATUS_OK)
        fwrite(shown, 1, n, out);
    else
        fputs("(not shown: out of memory)", out); /* never the raw bytes */
    if (shown != small)
        free(shown);
}

/*
 * ovnk's native CNI shim: the same program as cni/shim.py, compiled.
 *
 * The container runtime executes the CNI binary once per pod operation, and a
 * Python interpreter alone costs ~7 ms to start where a compiled binary costs
 * well under one; this file is that binary. It behaves exactly like shim.py
 * (the functional tests run both): VERSION is answered locally; every other
 * command is checked (CNI_COMMAND, the variables it requires, stdin must be a
 * UTF-8 JSON object) and forwarded to the node agent as
 *
 *     POST /cni HTTP/1.1 on the agent's unix socket
 *     {"env": {CNI_* variables}, "config": "<stdin>"}
 *
 * whose reply is {"result": <CNI result or null>} (2xx) or {"error": <CNI error
 * object>}. stdout and the exit status follow the CNI spec: the result (if any)
 * and 0, or an error object and 1. Errors found here carry the config's
 * cniVersion (1.1.0 when it has none).
 *
 * The default socket lives in ovnk_socket_slot, which `ovnk cni install`
 * rewrites in the installed copy (after the marker, NUL-padded); a
 * "serverSocket" string in the network config overrides it.
 *
 * Built statically (`ovnk cni build-shim`), so the host needs nothing else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define ERR_INVALID_ENVIRONMENT 4
#define ERR_IO_FAILURE 5
#define ERR_DECODING_FAILURE 6
#define ERR_TRY_AGAIN_LATER 11
#define ERR_NOT_AVAILABLE 50
#define ERR_BAD_REPLY 105

#define CURRENT_VERSION "1.1.0"
#define VERSION_REPLY \
    "{\"cniVersion\": \"1.1.0\", \"supportedVersions\": [\"0.3.0\", \"0.3.1\", \"0.4.0\", \"1.0.0\", \"1.1.0\"]}"

/* Connecting to a listening unix socket is immediate unless its backlog is full. */
#define CONNECT_TIMEOUT_S 10
/* ADD may wait for the pod annotation and ovn-installed; the runtime gives up after 2 minutes. */
#define REPLY_TIMEOUT_S 150
#define MAX_REPLY_BYTES (4 * 1024 * 1024)
#define MAX_DEPTH 512

/* The installer finds the marker and writes the socket path after it. Not static and not
 * const: the compiler must read the slot at run time instead of folding the default in. */
#define SOCKET_MARKER "ovnk-socket-path="
#define SOCKET_SLOT_BYTES 108
char ovnk_socket_slot[sizeof(SOCKET_MARKER) - 1 + SOCKET_SLOT_BYTES] =
    SOCKET_MARKER "/var/run/ovn-kubernetes/cni/ovn-cni-server.sock";

struct command {
    const char *name;
    const char *required[3];
};

static const struct command COMMANDS[] = {
    {"ADD", {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}},
    {"DEL", {"CNI_CONTAINERID", "CNI_IFNAME", NULL}},
    {"CHECK", {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}},
    {"VERSION", {NULL, NULL, NULL}},
    {"STATUS", {NULL, NULL, NULL}},
    {"GC", {NULL, NULL, NULL}},
};
#define COMMAND_COUNT (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static const char *const FORWARDED_ENV[] = {
    "CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH",
};

/* ---- growable byte buffer ------------------------------------------------------- */

struct buf {
    char *data;
    size_t len, cap;
};

static void out_of_memory(void) {
    fputs("{\"cniVersion\": \"" CURRENT_VERSION "\", \"code\": 5, \"msg\": \"ovnk CNI shim: out of memory\", "
          "\"details\": \"\"}\n",
          stdout);
    exit(1);
}

static void buf_reserve(struct buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) out_of_memory();
    b->data = data;
    b->cap = cap;
}

static void buf_add(struct buf *b, const char *s, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_vfmt(struct buf *b, const char *fmt, va_list ap) {
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n >= 0) {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
}

static void buf_fmt(struct buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    buf_vfmt(b, fmt, ap);
    va_end(ap);
}

/* ---- UTF-8 and JSON strings ----------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0 if there is none. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned int min, cp;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* Append s as a JSON string literal. Bytes that are not UTF-8 become \udcXX, as Python's
 * surrogateescape decoding of the environment followed by json.dumps renders them. */
static void buf_json_string(struct buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_add(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            switch (c) {
            case '\n': buf_add(b, "\\n", 2); break;
            case '\r': buf_add(b, "\\r", 2); break;
            case '\t': buf_add(b, "\\t", 2); break;
            default: buf_fmt(b, "\\u%04x", c);
            }
            i++;
        } else if (c < 0x80) {
            buf_add(b, s + i, 1);
            i++;
        } else {
            size_t len = utf8_sequence(u + i, n - i);
            if (len == 0) {
                buf_fmt(b, "\\udc%02x", c);
                i++;
            } else {
                buf_add(b, s + i, len);
                i += len;
            }
        }
    }
    buf_add(b, "\"", 1);
}

/* ---- a validating JSON reader (RFC 8259, as Python's json.loads accepts it) ------- */

struct json {
    const char *s;
    size_t n, i;
    int depth;
    const char *error; /* what is wrong, at byte i */
};

enum json_type { J_INVALID, J_OBJECT, J_ARRAY, J_STRING, J_NUMBER, J_INTEGER, J_TRUE, J_FALSE, J_NULL };

static const char *json_type_name(enum json_type t) {
    switch (t) {
    case J_OBJECT: return "object";
    case J_ARRAY: return "array";
    case J_STRING: return "string";
    case J_NUMBER: case J_INTEGER: return "number";
    case J_TRUE: case J_FALSE: return "boolean";
    case J_NULL: return "null";
    default: return "nothing";
    }
}

static void json_ws(struct json *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r'))
        j->i++;
}

static enum json_type json_fail(struct json *j, const char *what) {
    if (!j->error) j->error = what;
    return J_INVALID;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void put_utf8(struct buf *out, unsigned int cp) {
    char b[4];
    if (cp < 0x80) { b[0] = (char)cp; buf_add(out, b, 1); }
    else if (cp < 0x800) { b[0] = (char)(0xc0 | (cp >> 6)); b[1] = (char)(0x80 | (cp & 0x3f)); buf_add(out, b, 2); }
    else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12)); b[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); b[2] = (char)(0x80 | (cp & 0x3f));
        buf_add(out, b, 3);
    } else {
        b[0] = (char)(0xf0 | (cp >> 18)); b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); b[3] = (char)(0x80 | (cp & 0x3f));
        buf_add(out, b, 4);
    }
}

/* The four hex digits at s[at] as *cp; 0 when they are not all there or not all hex. */
static int json_hex4(const struct json *j, size_t at, unsigned int *cp) {
    if (at + 4 > j->n) return 0;
    *cp = 0;
    for (size_t k = 0; k < 4; k++) {
        int h = hex_value(j->s[at + k]);
        if (h < 0) return 0;
        *cp = *cp * 16 + (unsigned int)h;
    }
    return 1;
}

/* A string at j->i (on its opening quote); decoded into out when out is not NULL. */
static enum json_type json_string(struct json *j, struct buf *out) {
    j->i++;
    while (j->i < j->n) {
        unsigned char c = (unsigned char)j->s[j->i];
        if (c == '"') {
            j->i++;
            return J_STRING;
        }
        if (c < 0x20) return json_fail(j, "control character in a string");
        if (c == '\\') {
            if (j->i + 1 >= j->n) break;
            char e = j->s[j->i + 1];
            const char *plain = strchr("\"\\/bfnrt", e);
            if (e != '\0' && plain) {
                static const char decoded[] = "\"\\/\b\f\n\r\t";
                if (out) buf_add(out, &decoded[plain - "\"\\/bfnrt"], 1);
                j->i += 2;
                continue;
            }
            if (e != 'u') return json_fail(j, "invalid escape in a string");
            unsigned int cp;
            if (!json_hex4(j, j->i + 2, &cp)) {
                if (j->i + 6 > j->n) break;
                return json_fail(j, "invalid \\u escape in a string");
            }
            j->i += 6;
            /* A high surrogate followed by an escaped low one is one character, as Python's json
             * decodes it (found by the differential fuzzer); a lone surrogate stays as its 3-byte form. */
            unsigned int low;
            if (cp >= 0xd800 && cp <= 0xdbff && j->i + 1 < j->n && j->s[j->i] == '\\' && j->s[j->i + 1] == 'u' &&
                json_hex4(j, j->i + 2, &low) && low >= 0xdc00 && low <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                j->i += 6;
            }
            if (out) put_utf8(out, cp);
            continue;
        }
        size_t len = utf8_sequence((const unsigned char *)j->s + j->i, j->n - j->i);
        if (len == 0) return json_fail(j, "not UTF-8");
        if (out) buf_add(out, j->s + j->i, len);
        j->i += len;
    }
    return json_fail(j, "unterminated string");
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static enum json_type json_number(struct json *j) {
    int integer = 1;
    if (j->s[j->i] == '-') j->i++;
    if (j->i >= j->n || !is_digit(j->s[j->i])) return json_fail(j, "expected a value");
    if (j->s[j->i] == '0') j->i++;
    else while (j->i < j->n && is_digit(j->s[j->i])) j->i++;
    if (j->i < j->n && j->s[j->i] == '.') {
        integer = 0;
        j->i++;
        if (j->i >= j->n || !is_digit(j->s[j->i])) return json_fail(j, "expected a digit after '.'");
        while (j->i < j->n && is_digit(j->s[j->i])) j->i++;
    }
    if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
        integer = 0;
        j->i++;
        if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-')) j->i++;
        if (j->i >= j->n || !is_digit(j->s[j->i])) return json_fail(j, "expected a digit in the exponent");
        while (j->i < j->n && is_digit(j->s[j->i])) j->i++;
    }
    return integer ? J_INTEGER : J_NUMBER;
}

static enum json_type json_literal(struct json *j, const char *word, enum json_type type) {
    size_t len = strlen(word);
    if (j->n - j->i < len || memcmp(j->s + j->i, word, len) != 0) return json_fail(j, "expected a value");
    j->i += len;
    return type;
}

static enum json_type json_value(struct json *j);

static enum json_type json_container(struct json *j, char close, enum json_type type) {
    if (++j->depth > MAX_DEPTH) return json_fail(j, "nested too deeply");
    j->i++;
    json_ws(j);
    if (j->i < j->n && j->s[j->i] == close) {
        j->i++;
        j->depth--;
        return type;
    }
    for (;;) {
        if (type == J_OBJECT) {
            json_ws(j);
            if (j->i >= j->n || j->s[j->i] != '"') return json_fail(j, "expected a property name in double quotes");
            if (json_string(j, NULL) == J_INVALID) return J_INVALID;
            json_ws(j);
            if (j->i >= j->n || j->s[j->i] != ':') return json_fail(j, "expected ':'");
            j->i++;
        }
        if (json_value(j) == J_INVALID) return J_INVALID;
        json_ws(j);
        if (j->i < j->n && j->s[j->i] == ',') {
            j->i++;
            continue;
        }
        if (j->i < j->n && j->s[j->i] == close) {
            j->i++;
            j->depth--;
            return type;
        }
        return json_fail(j, type == J_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

/* The value at j->i, after blanks; j->i ends just after it. */
static enum json_type json_value(struct json *j) {
    json_ws(j);
    if (j->i >= j->n) return json_fail(j, "expected a value");
    switch (j->s[j->i]) {
    case '{': return json_container(j, '}', J_OBJECT);
    case '[': return json_container(j, ']', J_ARRAY);
    case '"': return json_string(j, NULL);
    case 't': return json_literal(j, "true", J_TRUE);
    case 'f': return json_literal(j, "false", J_FALSE);
    case 'n': return json_literal(j, "null", J_NULL);
    default: return json_number(j);
    }
}

/* Validate a whole document; its type, or J_INVALID with j->error and j->i set. */
static enum json_type json_document(struct json *j, const char *s, size_t n) {
    memset(j, 0, sizeof(*j));
    j->s = s;
    j->n = n;
    enum json_type type = json_value(j);
    if (type == J_INVALID) return type;
    json_ws(j);
    if (j->i != j->n) return json_fail(j, "extra data after the value");
    return type;
}

struct span {
    size_t start, end;
    enum json_type type;
};

/* The last member named key of the (valid) object starting at s[start]; 0 if absent. */
static int json_member(const char *s, size_t n, size_t start, const char *key, struct span *found) {
    struct json j = {.s = s, .n = n, .i = start + 1};
    struct buf name = {0};
    int hit = 0;
    json_ws(&j);
    if (j.i < n && s[j.i] == '}') return 0;
    for (;;) {
        json_ws(&j);
        name.len = 0;
        json_string(&j, &name);
        buf_add(&name, "", 0);
        json_ws(&j);
        j.i++; /* ':' */
        json_ws(&j);
        size_t value_start = j.i;
        enum json_type type = json_value(&j);
        if (strlen(name.data) == name.len && strcmp(name.data, key) == 0) {
            found->start = value_start;
            found->end = j.i;
            found->type = type;
            hit = 1;
        }
        json_ws(&j);
        if (j.i >= n || s[j.i] != ',') break;
        j.i++;
    }
    free(name.data);
    return hit;
}

/* The decoded string member key of the object at s[start], or NULL (absent or not a string). */
static char *json_string_member(const char *s, size_t n, size_t start, const char *key) {
    struct span v;
    if (!json_member(s, n, start, key, &v) || v.type != J_STRING) return NULL;
    struct json j = {.s = s, .n = v.end, .i = v.start};
    struct buf out = {0};
    json_string(&j, &out);
    buf_add(&out, "", 0);
    return out.data;
}

/* ---- errors --------------------------------------------------------------------- */

static const char *cni_version = CURRENT_VERSION;

static int report(int code, const char *details, const char *fmt, ...) {
    struct buf msg = {0}, out = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vfmt(&msg, fmt, ap);
    va_end(ap);
    buf_str(&out, "{\"cniVersion\": ");
    buf_json_string(&out, cni_version, strlen(cni_version));
    buf_fmt(&out, ", \"code\": %d, \"msg\": ", code);
    buf_json_string(&out, msg.data, msg.len);
    buf_str(&out, ", \"details\": ");
    buf_json_string(&out, details, strlen(details));
    buf_str(&out, "}\n");
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    return 1;
}

/* Python's repr of the first 200 bytes is what shim.py puts in details; text is as useful. */
static char *excerpt(const char *s, size_t n) {
    struct buf b = {0};
    buf_add(&b, s, n > 200 ? 200 : n);
    buf_add(&b, "", 0);
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] == '\0') b.data[i] = ' ';
    return b.data;
}

/* ---- the exchange with the node agent ------------------------------------------- */

struct reply {
    int status;
    char *body;
    size_t len;
};

/* Why the agent cannot be reached, worded like shim.py; errno describes the failure. */
static const char *unreachable_reason(int err) {
    switch (err) {
    case ENOENT: return "the socket does not exist";
    case ECONNREFUSED: return "connection refused";
    case EACCES: case EPERM: return "permission denied (the CNI binary must run as root)";
    case EAGAIN: case ETIMEDOUT: case EINPROGRESS: return "no answer in time";
    default: return strerror(err);
    }
}

static int unreachable(const char *command, const char *socket_path, const char *reason) {
    int code = strcmp(command, "STATUS") == 0 ? ERR_NOT_AVAILABLE : ERR_TRY_AGAIN_LATER;
    return report(code, "", "the ovnk node agent is not reachable on %s: %s; try again later", socket_path, reason);
}

static void set_timeout(int fd, int option, int seconds) {
    struct timeval tv = {.tv_sec = seconds};
    setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv));
}

/* 0 and *reply filled, or the exit status of a reported error. */
static int exchange(const char *command, const char *socket_path, const struct buf *body, struct reply *reply) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof(addr.sun_path))
        return unreachable(command, socket_path, "the socket path is too long");
    strcpy(addr.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return unreachable(command, socket_path, strerror(errno));
    set_timeout(fd, SO_SNDTIMEO, CONNECT_TIMEOUT_S);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        int err = errno;
        close(fd);
        return unreachable(command, socket_path, unreachable_reason(err));
    }
    set_timeout(fd, SO_SNDTIMEO, REPLY_TIMEOUT_S);
    set_timeout(fd, SO_RCVTIMEO, REPLY_TIMEOUT_S);

    struct buf request = {0};
    buf_fmt(&request,
            "POST /cni HTTP/1.1\r\nHost: ovnk-cni\r\nContent-Type: application/json\r\n"
            "Connection: close\r\nContent-Length: %zu\r\n\r\n",
            body->len);
    buf_add(&request, body->data, body->len);
    int send_err = 0;
    for (size_t sent = 0; sent < request.len;) {
        ssize_t n = send(fd, request.data + sent, request.len - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            if (err == EPIPE || err == ECONNRESET) {
                /* The agent may answer before reading the whole request (one over its size
                 * limit) and close: its reply is still waiting to be read. */
                send_err = err;
                break;
            }
            close(fd);
            return unreachable(command, socket_path, unreachable_reason(err));
        }
        sent += (size_t)n;
    }
    free(request.data);

    struct buf raw = {0};
    for (;;) {
        buf_reserve(&raw, 65536);
        ssize_t n = recv(fd, raw.data + raw.len, 65536, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            /* The agent closed with our request partly unread: the end of its reply. */
            if (err == ECONNRESET && raw.len > 0) break;
            close(fd);
            return unreachable(command, socket_path, unreachable_reason(send_err ? send_err : err));
        }
        if (n == 0) break;
        raw.len += (size_t)n;
        if (raw.len > MAX_REPLY_BYTES) {
            close(fd);
            return report(ERR_BAD_REPLY, "", "reply from the node agent on %s is too large", socket_path);
        }
    }
    close(fd);
    if (raw.len == 0 && send_err) return unreachable(command, socket_path, unreachable_reason(send_err));
    if (raw.len == 0) /* the agent took the connection and closed it: restarting, not broken */
        return unreachable(command, socket_path, "the connection closed without a reply");
    buf_add(&raw, "", 0);

    char *head_end = memmem(raw.data, raw.len, "\r\n\r\n", 4);
    int status = -1;
    if (head_end && strncmp(raw.data, "HTTP/", 5) == 0) {
        const char *code = memchr(raw.data, ' ', (size_t)(head_end - raw.data));
        if (code && is_digit(code[1])) {
            status = 0;
            for (code++; is_digit(*code) && status < 1000; code++) status = status * 10 + (*code - '0');
            if (*code != ' ' && *code != '\r') status = -1;
        }
    }
    if (status < 0) {
        char *details = excerpt(raw.data, raw.len);
        return report(ERR_BAD_REPLY, details, "the node agent on %s sent no valid HTTP reply", socket_path);
    }
    reply->status = status;
    reply->body = head_end + 4;
    reply->len = raw.len - (size_t)(reply->body - raw.data);
    /* Honour Content-Length when the agent sends one. */
    for (char *line = strstr(raw.data, "\r\n"); line && line < head_end; line = strstr(line + 2, "\r\n")) {
        const char *name = line + 2;
        if (strncasecmp(name, "content-length:", 15) == 0) {
            const char *v = name + 15;
            while (*v == ' ' || *v == '\t') v++;
            if (is_digit(*v)) {
                size_t length = strtoul(v, NULL, 10);
                if (length < reply->len) reply->len = length;
            }
        }
    }
    return 0;
}

/* ---- main ----------------------------------------------------------------------- */

static int read_stdin(struct buf *in) {
    for (;;) {
        buf_reserve(in, 65536);
        ssize_t n = read(0, in->data + in->len, 65536);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) return 0;
        in->len += (size_t)n;
    }
}

static int nonempty_env(const char *name) {
    const char *value = getenv(name);
    return value && *value;
}

int main(void) {
    const char *command = getenv("CNI_COMMAND");
    if (command && strcmp(command, "VERSION") == 0) {
        puts(VERSION_REPLY);
        return 0;
    }
    if (!command || !*command) return report(ERR_INVALID_ENVIRONMENT, "", "CNI_COMMAND is not set");
    const struct command *spec = NULL;
    for (size_t k = 0; k < COMMAND_COUNT; k++)
        if (strcmp(COMMANDS[k].name, command) == 0) spec = &COMMANDS[k];
    if (!spec)
        return report(ERR_INVALID_ENVIRONMENT, "", "CNI_COMMAND '%s' is not one of ADD, DEL, CHECK, VERSION, STATUS, GC",
                      command);

    struct buf config = {0};
    if (read_stdin(&config) != 0)
        return report(ERR_IO_FAILURE, "", "cannot read the network config from stdin: %s", strerror(errno));
    buf_add(&config, "", 0);
    struct json j;
    enum json_type type = json_document(&j, config.data, config.len);
    /* A valid object starts after any leading blanks. */
    size_t start = strspn(config.data, " \t\n\r");
    if (type == J_OBJECT) {
        char *declared = json_string_member(config.data, config.len, start, "cniVersion");
        if (declared) cni_version = declared;
    }

    struct buf missing = {0};
    for (int k = 0; k < 3 && spec->required[k]; k++) {
        if (!nonempty_env(spec->required[k])) {
            if (missing.len) buf_str(&missing, ", ");
            buf_str(&missing, spec->required[k]);
        }
    }
    if (missing.len)
        return report(ERR_INVALID_ENVIRONMENT, "", "%s needs %s, which is not set", command, missing.data);
    if (type == J_INVALID)
        return report(ERR_DECODING_FAILURE, "", "network config on stdin is not JSON: %s at byte %zu", j.error, j.i);
    if (type != J_OBJECT)
        return report(ERR_DECODING_FAILURE, "", "network config on stdin is a JSON %s, not an object",
                      json_type_name(type));

    const char *socket_path = json_string_member(config.data, config.len, start, "serverSocket");
    if (!socket_path || !*socket_path) socket_path = ovnk_socket_slot + sizeof(SOCKET_MARKER) - 1;

    struct buf body = {0};
    buf_str(&body, "{\"env\": {");
    int first = 1;
    for (size_t k = 0; k < sizeof(FORWARDED_ENV) / sizeof(FORWARDED_ENV[0]); k++) {
        const char *value = getenv(FORWARDED_ENV[k]);
        if (!value) continue;
        if (!first) buf_str(&body, ", ");
        first = 0;
        buf_json_string(&body, FORWARDED_ENV[k], strlen(FORWARDED_ENV[k]));
        buf_str(&body, ": ");
        buf_json_string(&body, value, strlen(value));
    }
    buf_str(&body, "}, \"config\": ");
    buf_json_string(&body, config.data, config.len);
    buf_str(&body, "}");

    struct reply reply = {0};
    int failed = exchange(command, socket_path, &body, &reply);
    if (failed) return failed;

    struct json r;
    enum json_type reply_type = json_document(&r, reply.body, reply.len);
    if (reply_type != J_OBJECT) {
        char *details = excerpt(reply.body, reply.len);
        return report(ERR_BAD_REPLY, details, "the node agent on %s answered HTTP %d without a JSON object",
                      socket_path, reply.status);
    }
    size_t reply_start = strspn(reply.body, " \t\n\r");
    struct span value;
    if (reply.status >= 200 && reply.status < 300 &&
        json_member(reply.body, reply.len, reply_start, "result", &value)) {
        if (value.type != J_NULL) {
            fwrite(reply.body + value.start, 1, value.end - value.start, stdout);
            fputc('\n', stdout);
        }
        return fflush(stdout) == 0 ? 0 : 1;
    }
    struct span code;
    if (json_member(reply.body, reply.len, reply_start, "error", &value) && value.type == J_OBJECT &&
        json_member(reply.body, reply.len, value.start, "code", &code) && code.type == J_INTEGER) {
        fwrite(reply.body + value.start, 1, value.end - value.start, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        return 1;
    }
    char *details = excerpt(reply.body, reply.len);
    return report(ERR_BAD_REPLY, details, "the node agent on %s answered HTTP %d without an error object",
                  socket_path, reply.status);
}

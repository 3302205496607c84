/*
 * ovnk-echo: the probe target (and probe client) of the ovnk sandbox.
 *
 * Built with `gcc -Os -static` by ovnk.core.lab.images into the image
 * docker.io/ovnk-test/echo:latest (entrypoint /ovnk-echo). Small, static and
 * dependency free so an image is a single file plus busybox.
 *
 * Server:   ovnk-echo [serve] [PORT/tcp|PORT/udp ...]     (default: 8080/tcp 8080/udp)
 * Client:   ovnk-echo send tcp|udp HOST PORT MESSAGE [TIMEOUT_SECONDS [SOURCE_PORT]]
 *
 * Protocol (the same on every port):
 *   - TCP is line based. Each received line is answered in order:
 *       "hostname"  -> the server's host name (the pod name) and "\n"
 *       "clientip"  -> the client's address as the server sees it and "\n"
 *       anything    -> the line itself, byte for byte (with its line ending)
 *     A line ending in "\r\n" is matched without the "\r". A line longer than
 *     the buffer (4 KiB) is echoed in chunks. When the client closes its side,
 *     an unterminated last line is treated like a line, then the server closes.
 *     If the first line starts with "GET ", the connection is answered as
 *     HTTP/1.0 instead (for wget/curl): path /hostname or /clientip gives the
 *     values above, any other path gives the request line; then it closes.
 *   - UDP: each datagram is answered with one datagram: "hostname" and
 *     "clientip" (with or without a trailing newline) as above, anything else
 *     is echoed back unchanged.
 *   - Every socket listens on all addresses (IPv6 dual-stack when the kernel
 *     has IPv6, else IPv4). SIGTERM exits at once (the server is often PID 1).
 *
 * Client: sends MESSAGE plus "\n" over TCP (then half-closes and prints
 * everything until the server closes) or as one UDP datagram (prints the
 * first reply). Exit status 0 on a reply, 1 on timeout or error (default
 * timeout 3 s). HOST must be a numeric IPv4/IPv6 address.
 *
 * Multicast (GROUP is a numeric IPv4 or IPv6 multicast address):
 *   ovnk-echo mcast-join GROUP PORT [REJOIN_SECONDS]
 *       Joins GROUP (the kernel sends the IGMP/MLD membership report) and
 *       prints one line per datagram received on PORT: "<source> <payload>"
 *       (a trailing newline of the payload dropped). With REJOIN_SECONDS > 0
 *       it leaves and joins again at that interval, so a network that missed
 *       the first report (it was dropped, or came before the network was
 *       ready) learns the membership without waiting for a querier.
 *   ovnk-echo mcast-watch GROUP PORT
 *       Does not join: prints the same line for every UDP datagram to
 *       GROUP:PORT that arrives on the host's interfaces, read from a packet
 *       socket (CAP_NET_RAW). The kernel drops datagrams of groups nobody
 *       joined before any UDP socket sees them; this shows what the network
 *       delivered anyway (a switch that floods instead of snooping).
 *   ovnk-echo mcast-send GROUP PORT MESSAGE [COUNT [INTERVAL_SECONDS [TTL]]]
 *       Sends MESSAGE as COUNT datagrams (default 1), INTERVAL_SECONDS apart
 *       (default 0.2), with that TTL / hop limit (default 4: a datagram must
 *       cross at least one router between nodes). Exit status 0 when every
 *       datagram was sent.
 * Receivers print "ovnk-echo: joined GROUP port PORT" (or "watching") once
 * ready and flush every line, so `kubectl logs` shows them at once. Bad
 * arguments exit with status 2.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTENERS 64
#define BUF_SIZE 4096

struct listener {
    int fd;
    int is_udp;
    int port;
};

static char host_name[256];

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static void format_peer(const struct sockaddr_storage *ss, char *out, size_t len) {
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], out, len);
        } else {
            inet_ntop(AF_INET6, &s6->sin6_addr, out, len);
        }
    } else if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, len);
    } else {
        snprintf(out, len, "unknown");
    }
}

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The reply to a command word, or NULL when the text is not a command. */
static const char *command_reply(const char *text, size_t len, const char *peer) {
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) len--;
    if (len == 8 && memcmp(text, "hostname", 8) == 0) return host_name;
    if (len == 8 && memcmp(text, "clientip", 8) == 0) return peer;
    return NULL;
}

static void http_reply(int fd, const char *line, size_t len, const char *peer) {
    char path[1024] = "";
    char body[2048];
    size_t plen = 0;
    const char *p = line + 4;
    while (p < line + len && *p != ' ' && *p != '\r' && *p != '\n' && plen < sizeof(path) - 1) {
        path[plen++] = *p++;
    }
    path[plen] = '\0';
    if (strcmp(path, "/hostname") == 0) {
        snprintf(body, sizeof(body), "%s\n", host_name);
    } else if (strcmp(path, "/clientip") == 0) {
        snprintf(body, sizeof(body), "%s\n", peer);
    } else {
        size_t l = len;
        while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r')) l--;
        snprintf(body, sizeof(body), "%.*s\n", (int)l, line);
    }
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n", strlen(body));
    write_all(fd, head, (size_t)hl);
    write_all(fd, body, strlen(body));
}

/* Answer one line (or chunk) of a TCP stream; returns 1 when the connection is done. */
static int answer_line(int fd, const char *line, size_t len, const char *peer, int first) {
    if (first && len >= 4 && memcmp(line, "GET ", 4) == 0) {
        http_reply(fd, line, len, peer);
        return 1;
    }
    const char *reply = command_reply(line, len, peer);
    if (reply != NULL) {
        if (write_all(fd, reply, strlen(reply)) < 0 || write_all(fd, "\n", 1) < 0) return 1;
        return 0;
    }
    return write_all(fd, line, len) < 0;
}

static void serve_tcp_connection(int fd, const struct sockaddr_storage *ss) {
    char peer[INET6_ADDRSTRLEN];
    char buf[BUF_SIZE];
    size_t used = 0;
    int first = 1;
    format_peer(ss, peer, sizeof(peer));
    for (;;) {
        ssize_t n = read(fd, buf + used, sizeof(buf) - used);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (used > 0) answer_line(fd, buf, used, peer, first);
            break;
        }
        used += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < used; i++) {
            if (buf[i] != '\n') continue;
            if (answer_line(fd, buf + start, i + 1 - start, peer, first)) goto done;
            first = 0;
            start = i + 1;
        }
        if (start == 0 && used == sizeof(buf)) {
            /* A line longer than the buffer: echo what we have as a chunk. */
            if (write_all(fd, buf, used) < 0) break;
            first = 0;
            used = 0;
        } else {
            memmove(buf, buf + start, used - start);
            used -= start;
        }
    }
done:
    close(fd);
}

static void serve_udp(int fd) {
    char buf[65536];
    struct sockaddr_storage ss;
    socklen_t slen = sizeof(ss);
    ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&ss, &slen);
    if (n < 0) return;
    char peer[INET6_ADDRSTRLEN];
    format_peer(&ss, peer, sizeof(peer));
    const char *reply = command_reply(buf, (size_t)n, peer);
    if (reply != NULL) {
        char out[512];
        int len = snprintf(out, sizeof(out), "%s\n", reply);
        sendto(fd, out, (size_t)len, 0, (struct sockaddr *)&ss, slen);
    } else {
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&ss, slen);
    }
}

static int open_listener(int port, int is_udp) {
    int type = is_udp ? SOCK_DGRAM : SOCK_STREAM;
    int one = 1, zero = 0;
    int fd = socket(AF_INET6, type, 0);
    if (fd >= 0) {
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof(a6));
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((unsigned short)port);
        a6.sin6_addr = in6addr_any;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        if (bind(fd, (struct sockaddr *)&a6, sizeof(a6)) == 0) goto bound;
        close(fd);
    }
    fd = socket(AF_INET, type, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a4;
    memset(&a4, 0, sizeof(a4));
    a4.sin_family = AF_INET;
    a4.sin_port = htons((unsigned short)port);
    a4.sin_addr.s_addr = htonl(INADDR_ANY);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a4, sizeof(a4)) != 0) {
        close(fd);
        return -1;
    }
bound:
    if (!is_udp && listen(fd, 128) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int serve(int argc, char **argv) {
    static char *defaults[] = {"8080/tcp", "8080/udp"};
    struct listener ls[MAX_LISTENERS];
    struct pollfd pfds[MAX_LISTENERS];
    int count = 0;
    if (argc == 0) {
        argc = 2;
        argv = defaults;
    }
    for (int i = 0; i < argc; i++) {
        char proto[8] = "";
        int port = 0;
        if (sscanf(argv[i], "%d/%7s", &port, proto) != 2 || port <= 0 || port > 65535 ||
            (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0)) {
            fprintf(stderr, "ovnk-echo: bad listener '%s' (want PORT/tcp or PORT/udp)\n", argv[i]);
            return 2;
        }
        if (count == MAX_LISTENERS) {
            fprintf(stderr, "ovnk-echo: at most %d listeners\n", MAX_LISTENERS);
            return 2;
        }
        int is_udp = strcmp(proto, "udp") == 0;
        int fd = open_listener(port, is_udp);
        if (fd < 0) {
            fprintf(stderr, "ovnk-echo: cannot listen on %d/%s: %s\n", port, proto, strerror(errno));
            return 1;
        }
        ls[count] = (struct listener){fd, is_udp, port};
        pfds[count] = (struct pollfd){fd, POLLIN, 0};
        count++;
        printf("ovnk-echo: listening on %d/%s\n", port, proto);
    }
    printf("ovnk-echo: hostname %s\n", host_name);
    fflush(stdout);
    for (;;) {
        if (poll(pfds, (nfds_t)count, -1) < 0) {
            if (errno == EINTR) continue;
            perror("ovnk-echo: poll");
            return 1;
        }
        for (int i = 0; i < count; i++) {
            if (!(pfds[i].revents & POLLIN)) continue;
            if (ls[i].is_udp) {
                serve_udp(ls[i].fd);
                continue;
            }
            struct sockaddr_storage ss;
            socklen_t slen = sizeof(ss);
            int conn = accept(ls[i].fd, (struct sockaddr *)&ss, &slen);
            if (conn < 0) continue;
            pid_t pid = fork();
            if (pid == 0) {
                for (int j = 0; j < count; j++) close(ls[j].fd);
                serve_tcp_connection(conn, &ss);
                _exit(0);
            }
            close(conn);
        }
    }
}

static int send_probe(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: ovnk-echo send tcp|udp HOST PORT MESSAGE [TIMEOUT_SECONDS [SOURCE_PORT]]\n");
        return 2;
    }
    int is_udp = strcmp(argv[0], "udp") == 0;
    if (!is_udp && strcmp(argv[0], "tcp") != 0) {
        fprintf(stderr, "ovnk-echo: protocol must be tcp or udp\n");
        return 2;
    }
    int timeout_ms = argc > 4 ? (int)(atof(argv[4]) * 1000) : 3000;
    struct sockaddr_storage dst;
    socklen_t dlen;
    memset(&dst, 0, sizeof(dst));
    int port = atoi(argv[2]);
    struct sockaddr_in *d4 = (struct sockaddr_in *)&dst;
    struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&dst;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "ovnk-echo: bad port %s\n", argv[2]);
        return 2;
    }
    if (inet_pton(AF_INET, argv[1], &d4->sin_addr) == 1) {
        d4->sin_family = AF_INET;
        d4->sin_port = htons((unsigned short)port);
        dlen = sizeof(*d4);
    } else if (inet_pton(AF_INET6, argv[1], &d6->sin6_addr) == 1) {
        d6->sin6_family = AF_INET6;
        d6->sin6_port = htons((unsigned short)port);
        dlen = sizeof(*d6);
    } else {
        fprintf(stderr, "ovnk-echo: %s is not a numeric IPv4/IPv6 address\n", argv[1]);
        return 2;
    }
    int fd = socket(dst.ss_family, (is_udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        perror("ovnk-echo: socket");
        return 1;
    }
    if (argc > 5) {
        /* A fixed source port: successive probes are one conntrack entry (the e2e conntrack specs). */
        int sport = atoi(argv[5]);
        if (sport <= 0 || sport > 65535) {
            fprintf(stderr, "ovnk-echo: bad source port %s\n", argv[5]);
            return 2;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_storage src;
        memset(&src, 0, sizeof(src));
        src.ss_family = dst.ss_family;
        if (dst.ss_family == AF_INET) ((struct sockaddr_in *)&src)->sin_port = htons((unsigned short)sport);
        else ((struct sockaddr_in6 *)&src)->sin6_port = htons((unsigned short)sport);
        if (bind(fd, (struct sockaddr *)&src, dlen) != 0) {
            fprintf(stderr, "ovnk-echo: bind source port %d: %s\n", sport, strerror(errno));
            return 1;
        }
    }
    struct pollfd pfd = {fd, POLLOUT, 0};
    if (connect(fd, (struct sockaddr *)&dst, dlen) != 0) {
        if (errno != EINPROGRESS) {
            perror("ovnk-echo: connect");
            return 1;
        }
        int err = 0;
        socklen_t elen = sizeof(err);
        if (poll(&pfd, 1, timeout_ms) <= 0) {
            fprintf(stderr, "ovnk-echo: connect timed out\n");
            return 1;
        }
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        if (err != 0) {
            fprintf(stderr, "ovnk-echo: connect: %s\n", strerror(err));
            return 1;
        }
    }
    size_t mlen = strlen(argv[3]);
    char *msg = malloc(mlen + 2);
    if (msg == NULL) return 1;
    memcpy(msg, argv[3], mlen);
    msg[mlen++] = '\n';
    if (send(fd, msg, mlen, 0) != (ssize_t)mlen) {
        perror("ovnk-echo: send");
        return 1;
    }
    if (!is_udp) shutdown(fd, SHUT_WR);
    char buf[65536];
    int got = 0;
    pfd.events = POLLIN;
    for (;;) {
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr <= 0) break;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            fprintf(stderr, "ovnk-echo: recv: %s\n", strerror(errno));
            return 1;
        }
        if (n == 0) break;
        fwrite(buf, 1, (size_t)n, stdout);
        got = 1;
        if (is_udp) break;
    }
    fflush(stdout);
    if (!got) {
        fprintf(stderr, "ovnk-echo: no reply within %d ms\n", timeout_ms);
        return 1;
    }
    return 0;
}

/* -- multicast ---------------------------------------------------------------------- */

struct mcast_group {
    int family; /* AF_INET or AF_INET6 */
    struct in_addr v4;
    struct in6_addr v6;
    int port;
    char text[INET6_ADDRSTRLEN];
};

/* Parse GROUP and PORT; prints why and returns -1 when they are not a multicast group and a port. */
static int parse_group(const char *group, const char *port_text, struct mcast_group *out) {
    memset(out, 0, sizeof(*out));
    char *end = NULL;
    long port = strtol(port_text, &end, 10);
    if (end == port_text || *end != '\0' || port <= 0 || port > 65535) {
        fprintf(stderr, "ovnk-echo: bad port %s\n", port_text);
        return -1;
    }
    out->port = (int)port;
    if (inet_pton(AF_INET, group, &out->v4) == 1) {
        out->family = AF_INET;
        if (!IN_MULTICAST(ntohl(out->v4.s_addr))) {
            fprintf(stderr, "ovnk-echo: %s is not an IPv4 multicast address\n", group);
            return -1;
        }
    } else if (inet_pton(AF_INET6, group, &out->v6) == 1) {
        out->family = AF_INET6;
        if (!IN6_IS_ADDR_MULTICAST(&out->v6)) {
            fprintf(stderr, "ovnk-echo: %s is not an IPv6 multicast address\n", group);
            return -1;
        }
    } else {
        fprintf(stderr, "ovnk-echo: %s is not a numeric IPv4/IPv6 address\n", group);
        return -1;
    }
    snprintf(out->text, sizeof(out->text), "%s", group);
    return 0;
}

/* One received datagram as a line: "<source> <payload>", a trailing newline of the payload dropped. */
static void print_datagram(const char *source, const char *data, size_t len) {
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r')) len--;
    printf("%s %.*s\n", source, (int)len, data);
    fflush(stdout);
}

/* Join or leave the group on the interface the kernel routes it to; 0 on success. */
static int membership(int fd, const struct mcast_group *g, int join) {
    if (g->family == AF_INET) {
        struct ip_mreq mreq;
        memset(&mreq, 0, sizeof(mreq));
        mreq.imr_multiaddr = g->v4;
        mreq.imr_interface.s_addr = htonl(INADDR_ANY);
        return setsockopt(fd, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &mreq, sizeof(mreq));
    }
    struct ipv6_mreq mreq6;
    memset(&mreq6, 0, sizeof(mreq6));
    mreq6.ipv6mr_multiaddr = g->v6;
    return setsockopt(fd, IPPROTO_IPV6, join ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP, &mreq6, sizeof(mreq6));
}

static double monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int mcast_join(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: ovnk-echo mcast-join GROUP PORT [REJOIN_SECONDS]\n");
        return 2;
    }
    struct mcast_group g;
    if (parse_group(argv[0], argv[1], &g) != 0) return 2;
    double rejoin = argc > 2 ? atof(argv[2]) : 0.0;
    int one = 1;
    int fd = socket(g.family, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("ovnk-echo: socket");
        return 1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Bound to the group itself: only its datagrams reach this socket. */
    int rc;
    if (g.family == AF_INET) {
        struct sockaddr_in a4;
        memset(&a4, 0, sizeof(a4));
        a4.sin_family = AF_INET;
        a4.sin_port = htons((unsigned short)g.port);
        a4.sin_addr = g.v4;
        rc = bind(fd, (struct sockaddr *)&a4, sizeof(a4));
    } else {
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof(a6));
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((unsigned short)g.port);
        a6.sin6_addr = g.v6;
        rc = bind(fd, (struct sockaddr *)&a6, sizeof(a6));
    }
    if (rc != 0 || membership(fd, &g, 1) != 0) {
        fprintf(stderr, "ovnk-echo: cannot join %s port %d: %s\n", g.text, g.port, strerror(errno));
        return 1;
    }
    printf("ovnk-echo: joined %s port %d\n", g.text, g.port);
    fflush(stdout);
    double next_rejoin = rejoin > 0 ? monotonic_seconds() + rejoin : 0;
    for (;;) {
        int timeout_ms = -1;
        if (rejoin > 0) {
            double left = next_rejoin - monotonic_seconds();
            timeout_ms = left > 0 ? (int)(left * 1000) + 1 : 0;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr < 0 && errno != EINTR) {
            perror("ovnk-echo: poll");
            return 1;
        }
        if (pr > 0) {
            char buf[65536];
            struct sockaddr_storage ss;
            socklen_t slen = sizeof(ss);
            ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&ss, &slen);
            if (n >= 0) {
                char peer[INET6_ADDRSTRLEN];
                format_peer(&ss, peer, sizeof(peer));
                print_datagram(peer, buf, (size_t)n);
            }
        }
        if (rejoin > 0 && monotonic_seconds() >= next_rejoin) {
            /* Leaving and joining again makes the kernel send a fresh membership report. */
            membership(fd, &g, 0);
            if (membership(fd, &g, 1) != 0) {
                fprintf(stderr, "ovnk-echo: cannot rejoin %s: %s\n", g.text, strerror(errno));
                return 1;
            }
            next_rejoin = monotonic_seconds() + rejoin;
        }
    }
}

/* The UDP payload of an IP packet read from a packet socket, if it is a datagram to the group. */
static int match_datagram(const unsigned char *pkt, size_t len, const struct mcast_group *g, char *source,
                          size_t source_len, const unsigned char **payload, size_t *payload_len) {
    size_t l4;
    if (g->family == AF_INET) {
        if (len < sizeof(struct iphdr)) return 0;
        const struct iphdr *ip = (const struct iphdr *)pkt;
        l4 = (size_t)ip->ihl * 4;
        if (ip->version != 4 || ip->protocol != IPPROTO_UDP || l4 < sizeof(struct iphdr) || len < l4 + 8 ||
            ip->daddr != g->v4.s_addr)
            return 0;
        inet_ntop(AF_INET, &ip->saddr, source, (socklen_t)source_len);
    } else {
        if (len < sizeof(struct ip6_hdr)) return 0;
        const struct ip6_hdr *ip6 = (const struct ip6_hdr *)pkt;
        l4 = sizeof(struct ip6_hdr);
        /* Datagrams with extension headers are not followed: a tool, not a stack. */
        if ((pkt[0] >> 4) != 6 || ip6->ip6_nxt != IPPROTO_UDP || len < l4 + 8 ||
            memcmp(&ip6->ip6_dst, &g->v6, sizeof(g->v6)) != 0)
            return 0;
        inet_ntop(AF_INET6, &ip6->ip6_src, source, (socklen_t)source_len);
    }
    const struct udphdr *udp = (const struct udphdr *)(pkt + l4);
    if (ntohs(udp->dest) != g->port) return 0;
    *payload = pkt + l4 + 8;
    *payload_len = len - l4 - 8;
    return 1;
}

static int mcast_watch(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: ovnk-echo mcast-watch GROUP PORT\n");
        return 2;
    }
    struct mcast_group g;
    if (parse_group(argv[0], argv[1], &g) != 0) return 2;
    int proto = htons(g.family == AF_INET ? ETH_P_IP : ETH_P_IPV6);
    int fd = socket(AF_PACKET, SOCK_DGRAM, proto);
    if (fd < 0) {
        fprintf(stderr, "ovnk-echo: packet socket: %s (needs CAP_NET_RAW)\n", strerror(errno));
        return 1;
    }
    printf("ovnk-echo: watching %s port %d\n", g.text, g.port);
    fflush(stdout);
    for (;;) {
        unsigned char buf[65536];
        struct sockaddr_ll from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("ovnk-echo: recvfrom");
            return 1;
        }
        if (from.sll_pkttype == PACKET_OUTGOING) continue; /* what this host sends is not delivery */
        char source[INET6_ADDRSTRLEN];
        const unsigned char *payload;
        size_t payload_len;
        if (match_datagram(buf, (size_t)n, &g, source, sizeof(source), &payload, &payload_len)) {
            print_datagram(source, (const char *)payload, payload_len);
        }
    }
}

static int mcast_send(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: ovnk-echo mcast-send GROUP PORT MESSAGE [COUNT [INTERVAL_SECONDS [TTL]]]\n");
        return 2;
    }
    struct mcast_group g;
    if (parse_group(argv[0], argv[1], &g) != 0) return 2;
    int count = argc > 3 ? atoi(argv[3]) : 1;
    double interval = argc > 4 ? atof(argv[4]) : 0.2;
    int ttl = argc > 5 ? atoi(argv[5]) : 4;
    if (count < 1 || interval < 0 || ttl < 1 || ttl > 255) {
        fprintf(stderr, "ovnk-echo: COUNT must be >= 1, INTERVAL >= 0 and TTL 1-255\n");
        return 2;
    }
    int fd = socket(g.family, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("ovnk-echo: socket");
        return 1;
    }
    struct sockaddr_storage dst;
    socklen_t dlen;
    memset(&dst, 0, sizeof(dst));
    int rc;
    if (g.family == AF_INET) {
        struct sockaddr_in *d4 = (struct sockaddr_in *)&dst;
        d4->sin_family = AF_INET;
        d4->sin_port = htons((unsigned short)g.port);
        d4->sin_addr = g.v4;
        dlen = sizeof(*d4);
        unsigned char ttl4 = (unsigned char)ttl;
        rc = setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl4, sizeof(ttl4));
    } else {
        struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&dst;
        d6->sin6_family = AF_INET6;
        d6->sin6_port = htons((unsigned short)g.port);
        d6->sin6_addr = g.v6;
        dlen = sizeof(*d6);
        rc = setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &ttl, sizeof(ttl));
    }
    if (rc != 0) {
        perror("ovnk-echo: multicast TTL");
        return 1;
    }
    size_t mlen = strlen(argv[2]);
    for (int i = 0; i < count; i++) {
        if (i > 0 && interval > 0) {
            struct timespec ts = {(time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9)};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
        if (sendto(fd, argv[2], mlen, 0, (struct sockaddr *)&dst, dlen) != (ssize_t)mlen) {
            fprintf(stderr, "ovnk-echo: send to %s port %d: %s\n", g.text, g.port, strerror(errno));
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGCHLD, SIG_IGN); /* TCP connection children are reaped by the kernel */
    signal(SIGPIPE, SIG_IGN);
    if (gethostname(host_name, sizeof(host_name) - 1) != 0) snprintf(host_name, sizeof(host_name), "unknown");
    if (argc > 1 && strcmp(argv[1], "send") == 0) return send_probe(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "serve") == 0) return serve(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "mcast-join") == 0) return mcast_join(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "mcast-watch") == 0) return mcast_watch(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "mcast-send") == 0) return mcast_send(argc - 2, argv + 2);
    return serve(argc - 1, argv + 1);
}

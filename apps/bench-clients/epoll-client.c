/*
 * epoll-client: the plain epoll load generator ukcm-bench checks ukcm-load against.
 *
 * What a C programmer writes for this job and nothing more, so that it shows what one core
 * of kernel-socket client can do: C connections, each keeping D length-prefixed messages in
 * flight (4-byte big-endian length, header excluded: the thrift framing), one thread,
 * level-triggered epoll, one write per connection per round, one read per readiness. Every
 * echoed byte is compared with what was sent and each connection's echoes must come back in
 * the order sent (the first difference ends the run with exit 1).
 *
 *   epoll-client -c IP:PORT -I DEV [-n CONNS] [-d DEPTH] [-s SIZE] [-t SECS]
 *
 * -I binds every socket to DEV (SO_BINDTODEVICE): traffic cannot leave through another
 * interface if the test's interface is missing. Without -I only loopback addresses are
 * accepted. Prints one JSON line: msgs_per_s, bytes_per_s, mean_rtt_us, cpu_pct (this
 * process's user+system time over the run's wall time), errors.
 *
 * Built by ukcm-bench with `cc -O2` (no project dependencies).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDR 4
#define BODY 12 /* u32 connection, u64 sequence */
#define RXBUF (1 << 20)

struct conn {
    int fd;
    uint32_t id;
    uint64_t next_seq;   /* next sequence to send */
    uint64_t expect_seq; /* next sequence expected back */
    int outstanding;
    uint8_t *tx;
    size_t tx_len, tx_pos;
    uint8_t *rx;
    size_t rx_len;
    uint64_t *sent_ns; /* send time by seq % depth */
    int want_out;      /* registered for EPOLLOUT (a write was cut short) */
};

static int depth = 64, size = 64;
static uint8_t *filler; /* expected bytes after the body, the same for every message */

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "epoll-client: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void put_msg(uint8_t *p, uint32_t id, uint64_t seq) {
    uint32_t len = htonl((uint32_t)(size - HDR));
    memcpy(p, &len, 4);
    memcpy(p + HDR, &id, 4);
    memcpy(p + HDR + 4, &seq, 8);
    memcpy(p + HDR + BODY, filler, size - HDR - BODY);
}

/* Queues messages up to the depth (when `refill`) and writes what the socket takes; 1 when
 * bytes remain. */
static int fill_and_write(struct conn *c, uint64_t t, int refill) {
    /* Unsent bytes belong to outstanding messages, so after this the buffer (depth messages)
     * has room for every message the loop below adds. */
    if (c->tx_pos > 0) {
        memmove(c->tx, c->tx + c->tx_pos, c->tx_len - c->tx_pos);
        c->tx_len -= c->tx_pos;
        c->tx_pos = 0;
    }
    while (refill && c->outstanding < depth) {
        put_msg(c->tx + c->tx_len, c->id, c->next_seq);
        c->sent_ns[c->next_seq % depth] = t;
        c->tx_len += size;
        c->next_seq++;
        c->outstanding++;
    }
    while (c->tx_pos < c->tx_len) {
        ssize_t n = write(c->fd, c->tx + c->tx_pos, c->tx_len - c->tx_pos);
        if (n < 0) {
            if (errno == EAGAIN) return 1;
            if (errno == EINTR) continue;
            die("write");
        }
        c->tx_pos += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *target = NULL, *dev = NULL;
    int conns = 4;
    double secs = 5;
    for (int o; (o = getopt(argc, argv, "c:I:n:d:s:t:")) != -1;) {
        switch (o) {
        case 'c': target = optarg; break;
        case 'I': dev = optarg; break;
        case 'n': conns = atoi(optarg); break;
        case 'd': depth = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 't': secs = atof(optarg); break;
        default: return 2;
        }
    }
    if (!target || conns < 1 || depth < 1 || size < HDR + BODY || size > RXBUF / 2) {
        fprintf(stderr, "usage: epoll-client -c IP:PORT -I DEV [-n CONNS] [-d DEPTH] [-s SIZE>=%d] [-t SECS]\n", HDR + BODY);
        return 2;
    }
    char host[64];
    const char *colon = strrchr(target, ':');
    if (!colon || (size_t)(colon - target) >= sizeof host) return fprintf(stderr, "epoll-client: bad -c\n"), 2;
    memcpy(host, target, colon - target);
    host[colon - target] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return fprintf(stderr, "epoll-client: bad address %s\n", host), 2;
    if (!dev && (ntohl(sa.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "epoll-client: refusing %s without -I DEV (only loopback may go unbound)\n", host);
        return 2;
    }
    filler = malloc(size);
    for (int i = 0; i < size; i++) filler[i] = (uint8_t)(i * 7 + 3);

    int ep = epoll_create1(0);
    struct conn *cs = calloc(conns, sizeof *cs);
    for (int i = 0; i < conns; i++) {
        struct conn *c = &cs[i];
        c->id = (uint32_t)i;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0) die("socket");
        if (dev && setsockopt(c->fd, SOL_SOCKET, SO_BINDTODEVICE, dev, strlen(dev)) < 0) die("SO_BINDTODEVICE");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
        c->tx = malloc((size_t)depth * size);
        c->rx = malloc(RXBUF);
        c->sent_ns = calloc(depth, sizeof(uint64_t));
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    }

    uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9), last_send = start;
    double cpu0 = cpu_s();
    uint64_t received = 0, rtt_sum = 0;
    for (int i = 0; i < conns; i++)
        if (fill_and_write(&cs[i], start, 1)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
            epoll_ctl(ep, EPOLL_CTL_MOD, cs[i].fd, &ev);
            cs[i].want_out = 1;
        }
    struct epoll_event evs[256];
    int sending = 1;
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        uint64_t t = now_ns();
        if (sending && t >= end) {
            sending = 0;
            last_send = t;
        }
        if (!sending) {
            int left = 0;
            for (int i = 0; i < conns; i++) left += cs[i].outstanding;
            if (left == 0 || t >= end + 2000000000ull) break;
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = &cs[evs[k].data.u32];
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = read(c->fd, c->rx + c->rx_len, RXBUF - c->rx_len);
                if (r == 0) {
                    fprintf(stderr, "epoll-client: connection %u closed by the server\n", c->id);
                    return 1;
                }
                if (r < 0 && errno != EAGAIN && errno != EINTR) die("read");
                if (r > 0) c->rx_len += (size_t)r;
                size_t at = 0;
                while (c->rx_len - at >= (size_t)size) {
                    uint8_t *m = c->rx + at;
                    uint32_t len, id;
                    uint64_t seq;
                    memcpy(&len, m, 4);
                    memcpy(&id, m + HDR, 4);
                    memcpy(&seq, m + HDR + 4, 8);
                    if (ntohl(len) != (uint32_t)(size - HDR) || id != c->id || seq != c->expect_seq ||
                        memcmp(m + HDR + BODY, filler, size - HDR - BODY) != 0) {
                        fprintf(stderr, "epoll-client: connection %u: echo %llu is not message %llu as sent\n", c->id,
                                (unsigned long long)seq, (unsigned long long)c->expect_seq);
                        return 1;
                    }
                    rtt_sum += t - c->sent_ns[seq % depth];
                    c->expect_seq++;
                    c->outstanding--;
                    received++;
                    at += size;
                }
                memmove(c->rx, c->rx + at, c->rx_len - at);
                c->rx_len -= at;
            }
            if (sending || c->tx_pos < c->tx_len) {
                int more = fill_and_write(c, t, sending);
                if (more != c->want_out) {
                    struct epoll_event ev = {.events = EPOLLIN | (more ? EPOLLOUT : 0), .data.u32 = evs[k].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    c->want_out = more;
                }
            }
        }
    }
    if (sending) last_send = now_ns();
    double wall = (last_send - start) / 1e9, cpu = cpu_s() - cpu0;
    uint64_t lost = 0;
    for (int i = 0; i < conns; i++) lost += (uint64_t)cs[i].outstanding;
    printf("{\"msgs_per_s\":%.0f,\"bytes_per_s\":%.0f,\"mean_rtt_us\":%.2f,\"cpu_pct\":%.1f,\"lost\":%llu}\n",
           received / wall, received * (double)size / wall, received ? rtt_sum / 1e3 / received : 0.0,
           100.0 * cpu / ((now_ns() - start) / 1e9), (unsigned long long)lost);
    return lost ? 1 : 0;
}

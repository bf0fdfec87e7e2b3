/*
 * sseload — ssegate's SSE load client: one process, epoll, non-blocking sockets, optional threads.
 *
 * Modes
 *   fanout  (-R RATE): open -c subscriber streams, then publish at a fixed rate over keep-alive
 *           connections (POST -U path, JSON {"t":<CLOCK_REALTIME µs>,"seq":n,"pad":"xx.."}) and
 *           measure, per received event, now − t. Only events *published* inside the measurement
 *           window are counted; after the window the publisher stops and the client waits up to
 *           -g seconds for stragglers, so delivery_ratio = received / (published × subscribers)
 *           is exact rather than a rate estimate.
 *   idle    (no -R, no -r): open -c streams, hold them -d seconds, report the server's memory.
 *   streams (-r RAMP): open -c streams evenly over RAMP seconds (each a generation: POST with -b
 *           or GET), every "t=<µs>" in a data line is one token, a stream ends on the chunked
 *           terminator, EOF of a close-delimited body, or a done/message_stop/[DONE] event.
 *           Reports token latency, time to first token, completion and errors.
 *
 * Timestamps: the publisher (or fake upstream) writes CLOCK_REALTIME microseconds; the client reads
 * the clock once per recv(). Latencies go into a 10 µs histogram below 100 ms and 1 ms above.
 * Server CPU and memory are read from /proc for the PIDs given with -S.
 * Output: one JSON line on stdout. Diagnostics go to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 8
#define MAX_HEADERS 16
#define MAX_PIDS 16
#define HDR_MAX 4096      /* response head larger than this is a protocol error for our peers */
#define CARRY_MAX 16384   /* longest SSE line we keep; longer ones are truncated (stamps come first) */
#define RECV_BUF 262144
#define LO_BUCKETS 10000  /* 10 µs buckets: 0 .. 100 ms */
#define HI_BUCKETS 120000 /* 1 ms buckets: 100 ms .. 120 s */

/* ---------------------------------------------------------------- clocks ---------------------- */

static int64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double cpu_self_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* ---------------------------------------------------------------- histogram ------------------- */

typedef struct {
    uint64_t lo[LO_BUCKETS];
    uint64_t hi[HI_BUCKETS];
    uint64_t n, over;
    double sum_us;
    int64_t max_us;
} hist_t;

static void hist_add(hist_t *h, int64_t us) {
    if (us < 0) us = 0; /* same host, same clock: only rounding can make this negative */
    h->n++;
    h->sum_us += (double)us;
    if (us > h->max_us) h->max_us = us;
    if (us < 100000) h->lo[us / 10]++;
    else if (us < 100000 + (int64_t)HI_BUCKETS * 1000) h->hi[(us - 100000) / 1000]++;
    else h->over++;
}

static void hist_merge(hist_t *dst, const hist_t *src) {
    for (int i = 0; i < LO_BUCKETS; i++) dst->lo[i] += src->lo[i];
    for (int i = 0; i < HI_BUCKETS; i++) dst->hi[i] += src->hi[i];
    dst->n += src->n;
    dst->over += src->over;
    dst->sum_us += src->sum_us;
    if (src->max_us > dst->max_us) dst->max_us = src->max_us;
}

/* Upper edge of the bucket holding the q-quantile, in ms (conservative by ≤ one bucket). */
static double hist_q_ms(const hist_t *h, double q) {
    if (h->n == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n) rank = h->n - 1;
    uint64_t seen = 0;
    for (int i = 0; i < LO_BUCKETS; i++) {
        seen += h->lo[i];
        if (seen > rank) return (i + 1) * 0.01;
    }
    for (int i = 0; i < HI_BUCKETS; i++) {
        seen += h->hi[i];
        if (seen > rank) return 100.0 + (i + 1);
    }
    return h->max_us / 1000.0;
}

static void hist_json(FILE *f, const char *name, const hist_t *h) {
    fprintf(f, "\"%s\":{\"n\":%llu,\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f,\"mean\":%.2f}",
            name, (unsigned long long)h->n, hist_q_ms(h, 0.50), hist_q_ms(h, 0.90), hist_q_ms(h, 0.99),
            hist_q_ms(h, 0.999), h->max_us / 1000.0, h->n ? h->sum_us / (double)h->n / 1000.0 : 0.0);
}

/* ---------------------------------------------------------------- options --------------------- */

typedef struct {
    const char *host, *path, *label, *method, *body, *pub_path, *pub_format;
    int port, pub_port, conns, threads, max_pending, pub_conns, pad_bytes, batch_us;
    double duration, warmup, grace, connect_timeout, ramp, pub_rate;
    int tokens_per_stream;
    const char *headers[MAX_HEADERS];
    int n_headers;
    const char *pub_headers[MAX_HEADERS];
    int n_pub_headers;
    int pids[MAX_PIDS];
    int n_pids;
} opts_t;

static opts_t O = {
    .host = "127.0.0.1", .path = "/", .label = "", .method = "GET", .pub_format = "raw",
    .port = 8000, .conns = 100, .threads = 1, .max_pending = 256, .pub_conns = 8, .pad_bytes = 100,
    .duration = 10, .warmup = 2, .grace = 2, .connect_timeout = 30,
};

enum { MODE_IDLE, MODE_FANOUT, MODE_STREAMS };
static int g_mode;
static bool g_ttft_log; /* SSELOAD_TTFT_LOG set: one stderr line per stream's first token */

/* ---------------------------------------------------------------- connections ----------------- */

enum { ST_CONNECTING, ST_SENDING, ST_HEAD, ST_BODY, ST_DONE, ST_FAILED, ST_UNOPENED };
enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_END };
enum { EV_NONE, EV_DONE, EV_ERROR };

typedef struct conn {
    int fd, idx, state;
    bool is_pub, pub_busy, counted_ok;
    const char *req;
    size_t req_len, req_off;
    char head[HDR_MAX];
    size_t head_len;
    int status;
    bool chunked, close_delimited;
    int64_t content_left;
    int ch_state;
    uint64_t ch_left;
    /* SSE line assembly: partial line carried between reads */
    char *carry;
    size_t carry_len;
    bool last_cr, ev_data, ev_stamped;
    int ev_kind;
    /* streams mode */
    int64_t open_us, first_token_us, end_us;
    uint32_t tokens;
    char pub_req[1024];
} conn_t;

typedef struct {
    int id, ep;
    conn_t *conns;      /* subscriber connections owned by this thread */
    int n_conns;
    conn_t *pubs;       /* publisher connections (thread 0 only) */
    int n_pubs;
    int next_open, pending;
    hist_t hist, ttft;
    _Atomic uint64_t counted;           /* stamped events inside the window (fanout) / tokens (streams) */
    _Atomic int established, failed, finished;
    uint64_t bytes, events_total, comments, unstamped, stream_errors, completed;
    uint64_t err_connect, err_status, err_reset, err_premature, err_head;
    int64_t max_stream_us;
    int64_t t_open0;
    char *rbuf;
} worker_t;

static worker_t W[MAX_THREADS];
static char *g_sub_req;
static size_t g_sub_req_len;
static struct sockaddr_in g_addr, g_pub_addr;

/* Phase boundaries (CLOCK_REALTIME µs), written by thread 0, read by all. */
static _Atomic int64_t g_w0 = INT64_MAX, g_w1 = INT64_MAX;
static _Atomic int g_stop;
static _Atomic int g_start_streams;

/* publisher counters (thread 0 only) */
static uint64_t pub_seq, pub_sent, pub_sent_window, pub_skipped, pub_ok, pub_err, pub_due_window;

static void die(const char *m) {
    perror(m);
    exit(2);
}

static void conn_reset_response(conn_t *c) {
    c->head_len = 0;
    c->status = 0;
    c->chunked = c->close_delimited = false;
    c->content_left = -1;
    c->ch_state = CH_SIZE;
    c->ch_left = 0;
    c->carry_len = 0;
    c->last_cr = c->ev_data = c->ev_stamped = false;
    c->ev_kind = EV_NONE;
}

static int open_socket(worker_t *w, conn_t *c, const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->req_off = 0;
    conn_reset_response(c);
    int r = connect(fd, (const struct sockaddr *)addr, sizeof *addr);
    if (r < 0 && errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    return 0;
}

static void conn_close(worker_t *w, conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

/* A subscriber stream ended (well or badly); updates the per-thread tallies exactly once. */
static void sub_finish(worker_t *w, conn_t *c, bool ok, int64_t now) {
    if (c->state == ST_DONE || c->state == ST_FAILED) return;
    bool was_established = c->state == ST_BODY;
    c->state = ok ? ST_DONE : ST_FAILED;
    c->end_us = now;
    conn_close(w, c);
    if (!was_established) {
        w->pending--;
        atomic_fetch_add(&w->failed, 1);
    }
    if (ok) {
        w->completed++;
        if (c->end_us - c->open_us > w->max_stream_us) w->max_stream_us = c->end_us - c->open_us;
    }
    atomic_fetch_add(&w->finished, 1);
}

/* ---------------------------------------------------------------- SSE parsing ----------------- */

/* Every "t=<digits>" (token stamp) or "\"t\":<digits>" (publisher stamp) in a data line. */
static void scan_stamps(worker_t *w, conn_t *c, const char *p, size_t n, int64_t now) {
    const char *end = p + n;
    for (const char *s = p; (s = memchr(s, 't', (size_t)(end - s))) != NULL; s++) {
        if (s > p && isalnum((unsigned char)s[-1])) continue;
        const char *d;
        if (s + 1 < end && s[1] == '=') d = s + 2;
        else if (s > p && s[-1] == '"' && s + 2 < end && s[1] == '"' && s[2] == ':') d = s + 3;
        else continue;
        if (d >= end || !isdigit((unsigned char)*d)) continue;
        int64_t t = 0;
        while (d < end && isdigit((unsigned char)*d)) t = t * 10 + (*d++ - '0');
        s = d - 1;
        c->ev_stamped = true;
        if (g_mode == MODE_STREAMS) {
            if (c->tokens == 0) {
                c->first_token_us = now;
                hist_add(&w->ttft, now - c->open_us);
                /* diagnostics: when each stream opened, its TTFT and the upstream's part of it */
                if (g_ttft_log)
                    fprintf(stderr, "ttft open_us=%lld ttft_us=%lld upstream_write_us=%lld\n",
                            (long long)c->open_us, (long long)(now - c->open_us), (long long)(t - c->open_us));
            }
            c->tokens++;
            hist_add(&w->hist, now - t);
            atomic_fetch_add_explicit(&w->counted, 1, memory_order_relaxed);
        } else if (t >= atomic_load_explicit(&g_w0, memory_order_relaxed) &&
                   t < atomic_load_explicit(&g_w1, memory_order_relaxed)) {
            hist_add(&w->hist, now - t);
            atomic_fetch_add_explicit(&w->counted, 1, memory_order_relaxed);
        }
        if (g_mode != MODE_STREAMS) return; /* one publish per event: the first stamp is it */
    }
}

static bool field_is(const char *line, size_t n, const char *name, const char **val, size_t *vlen) {
    size_t k = strlen(name);
    if (n < k || memcmp(line, name, k) != 0) return false;
    if (n == k) {
        *val = line + n;
        *vlen = 0;
        return true;
    }
    if (line[k] != ':') return false;
    size_t off = k + 1;
    if (off < n && line[off] == ' ') off++;
    *val = line + off;
    *vlen = n - off;
    return true;
}

/* Returns true when the stream should end (terminal event in streams mode). */
static bool sse_line(worker_t *w, conn_t *c, const char *line, size_t n, int64_t now) {
    const char *v;
    size_t vn;
    if (n == 0) {
        bool terminal = false;
        if (c->ev_data) {
            w->events_total++;
            if (!c->ev_stamped) w->unstamped++;
            if (c->ev_kind == EV_ERROR) w->stream_errors++;
            terminal = c->ev_kind != EV_NONE;
        }
        c->ev_data = c->ev_stamped = false;
        c->ev_kind = EV_NONE;
        return terminal && g_mode == MODE_STREAMS;
    }
    if (line[0] == ':') {
        w->comments++;
    } else if (field_is(line, n, "data", &v, &vn)) {
        c->ev_data = true;
        scan_stamps(w, c, v, vn, now);
        if (vn == 6 && memcmp(v, "[DONE]", 6) == 0) c->ev_kind = EV_DONE;
    } else if (field_is(line, n, "event", &v, &vn)) {
        if ((vn == 4 && memcmp(v, "done", 4) == 0) || (vn == 12 && memcmp(v, "message_stop", 12) == 0))
            c->ev_kind = EV_DONE;
        else if (vn == 5 && memcmp(v, "error", 5) == 0)
            c->ev_kind = EV_ERROR;
    }
    return false;
}

/* Feed decoded body bytes; lines end with LF, CRLF or CR (WHATWG). Returns true on terminal event. */
static bool sse_feed(worker_t *w, conn_t *c, const char *p, size_t n, int64_t now) {
    const char *end = p + n;
    while (p < end) {
        if (c->last_cr) { /* the LF of a CRLF split across reads */
            c->last_cr = false;
            if (*p == '\n') {
                p++;
                continue;
            }
        }
        /* memchr is vectorised: find LF, then a CR before it (CRLF or a lone CR ends the line first) */
        const char *s = memchr(p, '\n', (size_t)(end - p));
        const char *cr = memchr(p, '\r', (size_t)((s ? s : end) - p));
        if (cr) s = cr;
        if (!s) s = end;
        if (s == end) { /* partial line: carry it */
            size_t k = (size_t)(end - p);
            if (c->carry_len + k > CARRY_MAX) k = CARRY_MAX - c->carry_len;
            memcpy(c->carry + c->carry_len, p, k);
            c->carry_len += k;
            return false;
        }
        bool stop;
        if (c->carry_len) {
            size_t k = (size_t)(s - p);
            if (c->carry_len + k > CARRY_MAX) k = CARRY_MAX - c->carry_len;
            memcpy(c->carry + c->carry_len, p, k);
            stop = sse_line(w, c, c->carry, c->carry_len + k, now);
            c->carry_len = 0;
        } else {
            stop = sse_line(w, c, p, (size_t)(s - p), now);
        }
        if (*s == '\r') {
            if (s + 1 < end) {
                if (s[1] == '\n') s++;
            } else {
                c->last_cr = true;
            }
        }
        p = s + 1;
        if (stop) return true;
    }
    return false;
}

/* Undo chunked transfer coding; returns 1 on terminal chunk, -1 on a framing error. */
static int body_feed(worker_t *w, conn_t *c, const char *p, size_t n, int64_t now, bool *terminal) {
    if (!c->chunked) {
        if (c->content_left >= 0 && (int64_t)n > c->content_left) n = (size_t)c->content_left;
        if (!c->is_pub && sse_feed(w, c, p, n, now)) *terminal = true;
        if (c->content_left >= 0) {
            c->content_left -= (int64_t)n;
            if (c->content_left == 0) return 1;
        }
        return 0;
    }
    const char *end = p + n;
    while (p < end) {
        switch (c->ch_state) {
        case CH_SIZE: {
            int d = isdigit((unsigned char)*p) ? *p - '0'
                    : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
                    : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
                                                : -1;
            if (d >= 0) c->ch_left = c->ch_left * 16 + (uint64_t)d;
            else if (*p == '\r') c->ch_state = CH_SIZE_LF;
            else if (*p == ';' || *p == ' ') c->ch_state = CH_EXT;
            else return -1;
            p++;
            break;
        }
        case CH_EXT:
            if (*p == '\r') c->ch_state = CH_SIZE_LF;
            p++;
            break;
        case CH_SIZE_LF:
            if (*p++ != '\n') return -1;
            if (c->ch_left == 0) {
                c->ch_state = CH_END;
                return 1;
            }
            c->ch_state = CH_DATA;
            break;
        case CH_DATA: {
            size_t k = (size_t)(end - p);
            if (k > c->ch_left) k = (size_t)c->ch_left;
            if (!c->is_pub && sse_feed(w, c, p, k, now)) *terminal = true;
            p += k;
            c->ch_left -= k;
            if (c->ch_left == 0) c->ch_state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (*p++ != '\r') return -1;
            c->ch_state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (*p++ != '\n') return -1;
            c->ch_state = CH_SIZE;
            c->ch_left = 0;
            break;
        default:
            return 1;
        }
    }
    return 0;
}

/* Parse the response head once "\r\n\r\n" arrived; returns bytes of head consumed, 0 if incomplete. */
static size_t head_parse(conn_t *c) {
    char *e = memmem(c->head, c->head_len, "\r\n\r\n", 4);
    if (!e) return 0;
    *e = 0;
    if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1) c->status = -1;
    c->content_left = -1;
    for (char *h = strstr(c->head, "\r\n"); h;) {
        h += 2;
        char *eol = strstr(h, "\r\n");
        if (eol) *eol = 0; /* one header line at a time */
        if (!strncasecmp(h, "transfer-encoding:", 18) && strcasestr(h, "chunked")) c->chunked = true;
        if (!strncasecmp(h, "content-length:", 15)) c->content_left = atoll(h + 15);
        h = eol;
    }
    c->close_delimited = !c->chunked && c->content_left < 0;
    return (size_t)(e - c->head) + 4;
}

/* ---------------------------------------------------------------- publisher ------------------- */

static void pub_send(worker_t *w, conn_t *c, int64_t now) {
    char body[900];
    int pad = O.pad_bytes - 40; /* the rest of the JSON is ~40 bytes */
    if (pad < 1) pad = 1;
    if (pad > 700) pad = 700;
    char padding[701];
    memset(padding, 'x', (size_t)pad);
    padding[pad] = 0;
    int bl;
    if (!strcmp(O.pub_format, "data"))
        bl = snprintf(body, sizeof body, "{\"data\":{\"t\":%lld,\"seq\":%llu,\"pad\":\"%s\"}}", (long long)now,
                      (unsigned long long)pub_seq, padding);
    else
        bl = snprintf(body, sizeof body, "{\"t\":%lld,\"seq\":%llu,\"pad\":\"%s\"}", (long long)now,
                      (unsigned long long)pub_seq, padding);
    int n = snprintf(c->pub_req, sizeof c->pub_req,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n",
                     O.pub_path, O.host, bl);
    for (int i = 0; i < O.n_pub_headers; i++)
        n += snprintf(c->pub_req + n, sizeof c->pub_req - (size_t)n, "%s\r\n", O.pub_headers[i]);
    n += snprintf(c->pub_req + n, sizeof c->pub_req - (size_t)n, "\r\n%s", body);
    pub_seq++;
    c->req = c->pub_req;
    c->req_len = (size_t)n;
    c->req_off = 0;
    c->pub_busy = true;
    conn_reset_response(c);
    c->state = ST_SENDING;
    ssize_t s = send(c->fd, c->req, c->req_len, MSG_NOSIGNAL);
    if (s > 0) c->req_off = (size_t)s;
    if (c->req_off == c->req_len) c->state = ST_HEAD;
    else {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    pub_sent++;
    if (now >= atomic_load(&g_w0) && now < atomic_load(&g_w1)) pub_sent_window++;
}

static void pub_reopen(worker_t *w, conn_t *c) {
    conn_close(w, c);
    c->pub_busy = true; /* busy until connected */
    if (open_socket(w, c, &g_pub_addr) < 0) c->state = ST_FAILED;
}

/* ---------------------------------------------------------------- event loop ----------------- */

static void handle_readable(worker_t *w, conn_t *c) {
    for (int rounds = 0; rounds < 8; rounds++) {
        ssize_t r = recv(c->fd, w->rbuf, RECV_BUF, 0);
        int64_t now = wall_us();
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            bool reset = r < 0;
            if (c->is_pub) {
                if (r < 0) pub_err++;
                pub_reopen(w, c);
                return;
            }
            if (c->state == ST_BODY && c->close_delimited && !reset) {
                sub_finish(w, c, true, now); /* EOF ends a close-delimited body */
            } else {
                if (reset) w->err_reset++;
                else w->err_premature++;
                sub_finish(w, c, false, now);
            }
            return;
        }
        if (r < 0) return;
        w->bytes += (uint64_t)r;
        const char *p = w->rbuf;
        size_t n = (size_t)r;
        if (c->state == ST_HEAD || c->state == ST_SENDING) {
            size_t k = n;
            if (c->head_len + k > HDR_MAX - 1) k = HDR_MAX - 1 - c->head_len;
            memcpy(c->head + c->head_len, p, k);
            c->head_len += k;
            size_t used_before = c->head_len - k;
            size_t hl = head_parse(c);
            if (!hl) {
                if (c->head_len >= HDR_MAX - 1) {
                    w->err_head++;
                    if (c->is_pub) pub_reopen(w, c);
                    else sub_finish(w, c, false, now);
                }
                continue;
            }
            size_t body_off = hl - used_before;
            p += body_off;
            n -= body_off;
            if (c->is_pub) {
                if (c->status >= 200 && c->status < 300) pub_ok++;
                else pub_err++;
            } else if (c->status != 200 && c->status != 201) {
                w->err_status++;
                sub_finish(w, c, false, now);
                return;
            } else {
                c->state = ST_BODY;
                w->pending--;
                atomic_fetch_add(&w->established, 1);
            }
            c->state = ST_BODY;
            if (c->is_pub && c->content_left == 0) {
                c->pub_busy = false;
                continue;
            }
        }
        if (c->state != ST_BODY) return;
        bool terminal = false;
        int rc = body_feed(w, c, p, n, now, &terminal);
        if (c->is_pub) {
            if (rc != 0) c->pub_busy = false;
            if (rc < 0) pub_reopen(w, c);
            continue;
        }
        if (rc < 0) {
            w->err_premature++;
            sub_finish(w, c, false, now);
            return;
        }
        if (rc == 1 || terminal) {
            sub_finish(w, c, true, now);
            return;
        }
        if ((size_t)r < RECV_BUF) return;
    }
}

static void handle_writable(worker_t *w, conn_t *c) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            if (c->is_pub) {
                pub_err++;
                c->state = ST_FAILED;
                conn_close(w, c);
                return;
            }
            w->err_connect++;
            sub_finish(w, c, false, wall_us());
            return;
        }
        if (c->is_pub) {
            c->state = ST_BODY;
            c->pub_busy = false;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
            epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
            return;
        }
        c->state = ST_SENDING;
    }
    if (c->state == ST_SENDING) {
        ssize_t s = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
        if (s > 0) c->req_off += (size_t)s;
        if (c->req_off == c->req_len) {
            c->state = ST_HEAD;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
            epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
}

/* Open subscriber connections: all (bounded by -q in flight) or on the ramp schedule. */
static void open_more(worker_t *w, int64_t now) {
    while (w->next_open < w->n_conns) {
        conn_t *c = &w->conns[w->next_open];
        if (g_mode == MODE_STREAMS) {
            if (!atomic_load(&g_start_streams)) return;
            /* global index c->idx is due at t_open0 + idx × ramp / conns */
            int64_t due = w->t_open0 + (int64_t)((double)c->idx * O.ramp * 1e6 / O.conns);
            if (now < due) return;
        } else if (w->pending >= (O.max_pending + O.threads - 1) / O.threads) {
            return;
        }
        w->next_open++;
        w->pending++;
        c->req = g_sub_req;
        c->req_len = g_sub_req_len;
        c->open_us = wall_us();
        if (open_socket(w, c, &g_addr) < 0) {
            w->err_connect++;
            c->state = ST_CONNECTING;
            sub_finish(w, c, false, now);
        }
    }
}

static int64_t next_open_due(worker_t *w) {
    if (g_mode != MODE_STREAMS || w->next_open >= w->n_conns || !atomic_load(&g_start_streams)) return INT64_MAX;
    return w->t_open0 + (int64_t)((double)w->conns[w->next_open].idx * O.ramp * 1e6 / O.conns);
}

static int64_t g_pub_start = INT64_MAX, g_pub_stop = INT64_MAX;

static int64_t publish_due(worker_t *w, int64_t now) {
    if (!w->n_pubs || now < g_pub_start || now >= g_pub_stop) return INT64_MAX;
    double period = 1e6 / O.pub_rate;
    /* publishes due so far, by the fixed schedule; a due publish with no idle connection is skipped */
    uint64_t due_total = (uint64_t)((double)(now - g_pub_start) / period) + 1;
    static uint64_t handled;
    while (handled < due_total) {
        int64_t due_at = g_pub_start + (int64_t)((double)handled * period);
        bool in_window = due_at >= atomic_load(&g_w0) && due_at < atomic_load(&g_w1);
        if (in_window) pub_due_window++;
        conn_t *idle = NULL;
        for (int i = 0; i < w->n_pubs; i++)
            if (!w->pubs[i].pub_busy && w->pubs[i].state == ST_BODY) {
                idle = &w->pubs[i];
                break;
            }
        handled++;
        if (!idle) {
            if (in_window) pub_skipped++;
            continue;
        }
        pub_send(w, idle, wall_us());
    }
    return g_pub_start + (int64_t)((double)handled * period);
}

static void loop_once(worker_t *w, int64_t deadline_us) {
    struct epoll_event evs[512];
    int64_t now = wall_us();
    int64_t wake = deadline_us;
    if (w->id == 0) {
        int64_t nd = publish_due(w, now);
        if (nd < wake) wake = nd;
    }
    open_more(w, now);
    int64_t od = next_open_due(w);
    if (od < wake) wake = od;
    int64_t wait = wake - wall_us();
    if (wait < 0) wait = 0;
    if (wait > 20000) wait = 20000;
    struct timespec ts = {.tv_sec = wait / 1000000, .tv_nsec = (wait % 1000000) * 1000};
    int n = epoll_pwait2(w->ep, evs, 512, &ts, NULL);
    for (int i = 0; i < n; i++) {
        conn_t *c = evs[i].data.ptr;
        if (c->fd < 0) continue;
        if (evs[i].events & EPOLLOUT) handle_writable(w, c);
        if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
            if (c->state == ST_CONNECTING) handle_writable(w, c);
            else handle_readable(w, c);
        }
    }
    if (O.batch_us > 0 && atomic_load(&g_w0) != INT64_MAX) usleep((useconds_t)O.batch_us);
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    while (!atomic_load(&g_stop)) loop_once(w, wall_us() + 20000);
    return NULL;
}

/* ---------------------------------------------------------------- /proc sampling -------------- */

typedef struct {
    long rss_kb, pss_kb;
} mem_t;

static mem_t mem_sample(void) {
    mem_t m = {0, 0};
    char path[64], line[256];
    for (int i = 0; i < O.n_pids; i++) {
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", O.pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f)) {
            long v;
            if (sscanf(line, "Rss: %ld kB", &v) == 1) m.rss_kb += v;
            else if (sscanf(line, "Pss: %ld kB", &v) == 1) m.pss_kb += v;
        }
        fclose(f);
    }
    return m;
}

static double server_cpu_s(void) {
    double total = 0;
    char path[64], buf[2048];
    long hz = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < O.n_pids; i++) {
        snprintf(path, sizeof path, "/proc/%d/stat", O.pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')'); /* the command name may contain spaces */
        if (!p) continue;
        unsigned long ut = 0, st = 0;
        /* fields after ')': state(3) ... utime(14) stime(15) */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += (double)(ut + st) / (double)hz;
    }
    return total;
}

/* ---------------------------------------------------------------- main ------------------------ */

static void usage(void) {
    fprintf(stderr,
            "usage: sseload [-h host] [-p port] [-P path] [-c conns] [-d secs] [-w warmup] [-g grace]\n"
            "  [-t threads] [-q max_pending] [-T connect_timeout] [-H 'Name: v']... [-m METHOD] [-b body]\n"
            "  [-R pub_rate -U pub_path [-k pub_conns] [-z bytes] [-F raw|data] [-e 'Name: v']... [-Q pub_port]]\n"
            "  [-r ramp_secs [-E tokens_per_stream]] [-B batch_sleep_us] [-S pid,pid] [-L label]\n");
    exit(2);
}

static uint64_t sum_counted(void) {
    uint64_t s = 0;
    for (int i = 0; i < O.threads; i++) s += atomic_load_explicit(&W[i].counted, memory_order_relaxed);
    return s;
}

#define SUM_FIELD(f)                                                                                      \
    ({                                                                                                    \
        int _s = 0;                                                                                       \
        for (int _i = 0; _i < O.threads; _i++) _s += atomic_load(&W[_i].f);                              \
        _s;                                                                                               \
    })

int main(int argc, char **argv) {
    g_ttft_log = getenv("SSELOAD_TTFT_LOG") != NULL;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:P:c:d:w:g:t:q:T:H:m:b:R:U:k:z:F:e:Q:r:E:B:S:L:")) != -1) {
        switch (opt) {
        case 'h': O.host = optarg; break;
        case 'p': O.port = atoi(optarg); break;
        case 'P': O.path = optarg; break;
        case 'c': O.conns = atoi(optarg); break;
        case 'd': O.duration = atof(optarg); break;
        case 'w': O.warmup = atof(optarg); break;
        case 'g': O.grace = atof(optarg); break;
        case 't': O.threads = atoi(optarg); break;
        case 'q': O.max_pending = atoi(optarg); break;
        case 'T': O.connect_timeout = atof(optarg); break;
        case 'H': if (O.n_headers < MAX_HEADERS) O.headers[O.n_headers++] = optarg; break;
        case 'm': O.method = optarg; break;
        case 'b': O.body = optarg; break;
        case 'R': O.pub_rate = atof(optarg); break;
        case 'U': O.pub_path = optarg; break;
        case 'k': O.pub_conns = atoi(optarg); break;
        case 'z': O.pad_bytes = atoi(optarg); break;
        case 'F': O.pub_format = optarg; break;
        case 'e': if (O.n_pub_headers < MAX_HEADERS) O.pub_headers[O.n_pub_headers++] = optarg; break;
        case 'Q': O.pub_port = atoi(optarg); break;
        case 'r': O.ramp = atof(optarg); break;
        case 'E': O.tokens_per_stream = atoi(optarg); break;
        case 'B': O.batch_us = atoi(optarg); break;
        case 'S':
            for (char *s = strtok(optarg, ","); s && O.n_pids < MAX_PIDS; s = strtok(NULL, ","))
                O.pids[O.n_pids++] = atoi(s);
            break;
        case 'L': O.label = optarg; break;
        default: usage();
        }
    }
    if (O.conns < 1 || O.threads < 1 || O.threads > MAX_THREADS) usage();
    if (O.pub_rate > 0 && !O.pub_path) usage();
    g_mode = O.ramp > 0 ? MODE_STREAMS : O.pub_rate > 0 ? MODE_FANOUT : MODE_IDLE;
    if (!O.pub_port) O.pub_port = O.port;
    signal(SIGPIPE, SIG_IGN);

    /* one fd per connection: raise the soft limit to the hard one */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)O.port);
    if (inet_pton(AF_INET, O.host, &g_addr.sin_addr) != 1) usage();
    g_pub_addr = g_addr;
    g_pub_addr.sin_port = htons((uint16_t)O.pub_port);

    /* the subscriber request is identical for every connection: build it once */
    g_sub_req = malloc(8192);
    int n = snprintf(g_sub_req, 8192, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n", O.method,
                     O.path, O.host, O.port);
    for (int i = 0; i < O.n_headers; i++) n += snprintf(g_sub_req + n, 8192 - (size_t)n, "%s\r\n", O.headers[i]);
    if (O.body)
        n += snprintf(g_sub_req + n, 8192 - (size_t)n, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen(O.body), O.body);
    else
        n += snprintf(g_sub_req + n, 8192 - (size_t)n, "\r\n");
    g_sub_req_len = (size_t)n;

    conn_t *all = calloc((size_t)O.conns, sizeof(conn_t));
    for (int i = 0; i < O.conns; i++) {
        all[i].fd = -1;
        all[i].idx = i;
        all[i].state = ST_UNOPENED;
    }
    /* connections are handed out round-robin so a ramp spreads over threads evenly */
    int per = (O.conns + O.threads - 1) / O.threads;
    conn_t **owned = calloc((size_t)O.threads, sizeof(conn_t *));
    for (int t = 0; t < O.threads; t++) {
        worker_t *w = &W[t];
        w->id = t;
        w->ep = epoll_create1(0);
        if (w->ep < 0) die("epoll_create1");
        w->rbuf = malloc(RECV_BUF);
        owned[t] = calloc((size_t)per, sizeof(conn_t));
        w->conns = owned[t];
    }
    for (int i = 0; i < O.conns; i++) {
        worker_t *w = &W[i % O.threads];
        conn_t *c = &w->conns[w->n_conns++];
        *c = all[i];
        c->carry = malloc(CARRY_MAX);
    }
    free(all);

    mem_t m_before = mem_sample();
    int64_t t_start = wall_us();
    W[0].t_open0 = t_start;

    pthread_t th[MAX_THREADS];
    for (int t = 1; t < O.threads; t++) pthread_create(&th[t], NULL, worker_main, &W[t]);

    worker_t *w0 = &W[0];
    double cpu_srv0 = 0, cpu_cli0 = 0;
    int64_t t_cpu0 = 0, t_connected = 0;
    mem_t m_connected = {0, 0}, m_end = {0, 0}, m_max = {0, 0};
    int64_t next_mem = t_start + 1000000;
    double srv_cpu_window = 0, cli_cpu_window = 0;

    if (g_mode == MODE_STREAMS) {
        for (int t = 0; t < O.threads; t++) W[t].t_open0 = t_start;
        atomic_store(&g_start_streams, 1);
        cpu_srv0 = server_cpu_s();
        cpu_cli0 = cpu_self_s();
        t_cpu0 = t_start;
        int64_t cap = t_start + (int64_t)(O.duration * 1e6);
        while (wall_us() < cap && SUM_FIELD(finished) < O.conns) {
            loop_once(w0, wall_us() + 20000);
            int64_t now = wall_us();
            if (now >= next_mem) {
                mem_t m = mem_sample();
                if (m.rss_kb > m_max.rss_kb) m_max = m;
                next_mem = now + 1000000;
            }
        }
        t_connected = wall_us();
    } else {
        /* 1. connect everything (bounded by -T) */
        int64_t deadline = t_start + (int64_t)(O.connect_timeout * 1e6);
        while (wall_us() < deadline && SUM_FIELD(established) + SUM_FIELD(failed) < O.conns)
            loop_once(w0, wall_us() + 20000);
        t_connected = wall_us();
        m_connected = mem_sample();
        if (g_mode == MODE_FANOUT) {
            w0->pubs = calloc((size_t)O.pub_conns, sizeof(conn_t));
            w0->n_pubs = O.pub_conns;
            for (int i = 0; i < O.pub_conns; i++) {
                w0->pubs[i].fd = -1; /* calloc'd: 0 would be stdin */
                w0->pubs[i].is_pub = true;
                w0->pubs[i].carry = malloc(16);
                pub_reopen(w0, &w0->pubs[i]);
            }
            /* let the publisher connections connect before the clock starts */
            int64_t until = wall_us() + 300000;
            while (wall_us() < until) loop_once(w0, until);
            g_pub_start = wall_us();
            atomic_store(&g_w0, g_pub_start + (int64_t)(O.warmup * 1e6));
            atomic_store(&g_w1, atomic_load(&g_w0) + (int64_t)(O.duration * 1e6));
            g_pub_stop = atomic_load(&g_w1);
        } else {
            atomic_store(&g_w0, wall_us());
            atomic_store(&g_w1, atomic_load(&g_w0) + (int64_t)(O.duration * 1e6));
        }
        int64_t w0t = atomic_load(&g_w0), w1t = atomic_load(&g_w1);
        while (wall_us() < w0t) loop_once(w0, w0t);
        cpu_srv0 = server_cpu_s();
        cpu_cli0 = cpu_self_s();
        t_cpu0 = wall_us();
        while (wall_us() < w1t) {
            loop_once(w0, w1t);
            int64_t now = wall_us();
            if (now >= next_mem) {
                mem_t m = mem_sample();
                if (m.rss_kb > m_max.rss_kb) m_max = m;
                next_mem = now + 1000000;
            }
        }
    }
    int64_t t_cpu1 = wall_us();
    srv_cpu_window = server_cpu_s() - cpu_srv0;
    cli_cpu_window = cpu_self_s() - cpu_cli0;
    m_end = mem_sample();
    if (m_end.rss_kb > m_max.rss_kb) m_max = m_end;

    /* 3. fanout: stop publishing, give stragglers up to -g seconds (ends early once all arrived) */
    if (g_mode == MODE_FANOUT) {
        int64_t grace_end = wall_us() + (int64_t)(O.grace * 1e6);
        while (wall_us() < grace_end) {
            int est = SUM_FIELD(established) - SUM_FIELD(finished);
            if (sum_counted() >= pub_sent_window * (uint64_t)(est > 0 ? est : 1)) break;
            loop_once(w0, grace_end);
        }
    }
    atomic_store(&g_stop, 1);
    for (int t = 1; t < O.threads; t++) pthread_join(th[t], NULL);

    /* merge per-thread results into thread 0's */
    hist_t *hist = calloc(1, sizeof(hist_t)), *ttft = calloc(1, sizeof(hist_t));
    uint64_t counted = 0, bytes = 0, evs = 0, comments = 0, unstamped = 0, serr = 0, completed = 0;
    uint64_t e_conn = 0, e_status = 0, e_reset = 0, e_prem = 0, e_head = 0;
    int established = 0, failed = 0, still_open = 0;
    int64_t max_stream = 0;
    for (int t = 0; t < O.threads; t++) {
        worker_t *w = &W[t];
        hist_merge(hist, &w->hist);
        hist_merge(ttft, &w->ttft);
        counted += atomic_load(&w->counted);
        bytes += w->bytes;
        evs += w->events_total;
        comments += w->comments;
        unstamped += w->unstamped;
        serr += w->stream_errors;
        completed += w->completed;
        e_conn += w->err_connect;
        e_status += w->err_status;
        e_reset += w->err_reset;
        e_prem += w->err_premature;
        e_head += w->err_head;
        established += atomic_load(&w->established);
        failed += atomic_load(&w->failed);
        if (w->max_stream_us > max_stream) max_stream = w->max_stream_us;
        for (int i = 0; i < w->n_conns; i++) {
            conn_t *c = &w->conns[i];
            if (g_mode == MODE_STREAMS && c->state != ST_DONE && c->state != ST_FAILED) {
                still_open++;
                int64_t len = t_cpu1 - c->open_us;
                if (c->state != ST_UNOPENED && len > max_stream) max_stream = len;
            }
        }
    }
    double wall_window = (double)(t_cpu1 - t_cpu0) / 1e6;
    double window = g_mode == MODE_STREAMS ? wall_window : O.duration;

    FILE *f = stdout;
    fprintf(f, "{\"label\":\"%s\",\"mode\":\"%s\",\"conns\":%d,\"connections_ok\":%d,\"connections_failed\":%d,",
            O.label, g_mode == MODE_STREAMS ? "streams" : g_mode == MODE_FANOUT ? "fanout" : "idle", O.conns,
            established, failed);
    fprintf(f, "\"connect_s\":%.3f,\"window_s\":%.3f,\"events\":%llu,\"events_per_s\":%.1f,\"bytes\":%llu,", 
            (double)(t_connected - t_start) / 1e6, window, (unsigned long long)counted,
            window > 0 ? (double)counted / window : 0.0, (unsigned long long)bytes);
    fprintf(f, "\"events_total\":%llu,\"comments\":%llu,\"unstamped_events\":%llu,", (unsigned long long)evs,
            (unsigned long long)comments, (unsigned long long)unstamped);
    hist_json(f, "latency_ms", hist);
    if (g_mode == MODE_FANOUT) {
        double expected = (double)pub_sent_window * established;
        fprintf(f, ",\"pub\":{\"rate\":%.1f,\"sent\":%llu,\"sent_in_window\":%llu,\"due_in_window\":%llu,"
                   "\"skipped\":%llu,\"ok\":%llu,\"errors\":%llu,\"backpressure\":%.4f}",
                O.pub_rate, (unsigned long long)pub_sent, (unsigned long long)pub_sent_window,
                (unsigned long long)pub_due_window, (unsigned long long)pub_skipped, (unsigned long long)pub_ok,
                (unsigned long long)pub_err, pub_due_window ? (double)pub_skipped / (double)pub_due_window : 0.0);
        fprintf(f, ",\"delivery_ratio\":%.5f", expected > 0 ? (double)counted / expected : 0.0);
    }
    if (g_mode == MODE_STREAMS) {
        uint64_t expected = (uint64_t)O.tokens_per_stream * (uint64_t)O.conns;
        fprintf(f, ",\"streams\":{\"expected_tokens\":%llu,\"tokens\":%llu,\"token_delivery\":%.5f,"
                   "\"completed\":%llu,\"still_open\":%d,\"stream_errors\":%llu,\"max_stream_s\":%.3f,",
                (unsigned long long)expected, (unsigned long long)counted,
                expected ? (double)counted / (double)expected : 0.0, (unsigned long long)completed, still_open,
                (unsigned long long)serr, (double)max_stream / 1e6);
        hist_json(f, "ttft_ms", ttft);
        fprintf(f, "}");
    }
    long conns_ok = established > 0 ? established : 1;
    fprintf(f, ",\"server\":{\"pids\":[");
    for (int i = 0; i < O.n_pids; i++) fprintf(f, "%s%d", i ? "," : "", O.pids[i]);
    fprintf(f, "],\"cpu_pct\":%.1f,\"rss_kb_before\":%ld,\"rss_kb_connected\":%ld,\"rss_kb_end\":%ld,"
               "\"rss_kb_max\":%ld,\"pss_kb_before\":%ld,\"pss_kb_connected\":%ld,\"pss_kb_end\":%ld,"
               "\"kb_per_conn\":%.2f,\"rss_kb_per_conn\":%.2f}",
            wall_window > 0 ? 100.0 * srv_cpu_window / wall_window : 0.0, m_before.rss_kb, m_connected.rss_kb,
            m_end.rss_kb, m_max.rss_kb, m_before.pss_kb, m_connected.pss_kb, m_end.pss_kb,
            (double)(m_end.pss_kb - m_before.pss_kb) / (double)conns_ok,
            (double)(m_end.rss_kb - m_before.rss_kb) / (double)conns_ok);
    fprintf(f, ",\"client_cpu_pct\":%.1f", wall_window > 0 ? 100.0 * cli_cpu_window / wall_window : 0.0);
    fprintf(f, ",\"errors\":{\"connect\":%llu,\"http_status\":%llu,\"reset\":%llu,\"premature_close\":%llu,"
               "\"bad_head\":%llu}}\n",
            (unsigned long long)e_conn, (unsigned long long)e_status, (unsigned long long)e_reset,
            (unsigned long long)e_prem, (unsigned long long)e_head);
    fflush(f);
    return 0;
}

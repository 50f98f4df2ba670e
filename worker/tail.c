/*
 * tail.c - the bounded tail of a job's output, and wire-safe text.
 *
 * A tail is a ring buffer holding the last `cap` bytes appended, with the
 * count of every byte ever appended (`total`) and how far live chunks have
 * been taken (`taken`), both absolute offsets: byte o lives at buf[o % cap]
 * while total - cap <= o < total.
 *
 * Text leaving here goes into JSON (jansson refuses invalid UTF-8 and the
 * master stores C strings), so it is cleaned one byte for one: invalid
 * UTF-8, NUL and control characters other than tab, newline and return
 * become '?'. The JSON escaping of clean text is at most twice its size,
 * which keeps a FINISHED with a 64 KiB output well inside PROTO_MAX_BODY.
 */
#include "worker/worker.h"

#include <stdlib.h>
#include <string.h>

struct tail {
    char *buf;
    size_t cap;
    uint64_t total, taken;
};

tail_t *tail_new(size_t cap)
{
    tail_t *self = calloc(1, sizeof *self);
    self->cap = cap ? cap : 1;
    self->buf = malloc(self->cap);
    return self;
}

void tail_destroy(tail_t **self_p)
{
    tail_t *self = *self_p;
    if (!self)
        return;
    free(self->buf);
    free(self);
    *self_p = NULL;
}

void tail_append(tail_t *self, const void *data, size_t n)
{
    const char *p = data;
    if (n > self->cap) { /* only the end can be kept */
        self->total += n - self->cap;
        p += n - self->cap;
        n = self->cap;
    }
    size_t at = (size_t)(self->total % self->cap);
    size_t first = n < self->cap - at ? n : self->cap - at;
    memcpy(self->buf + at, p, first);
    memcpy(self->buf, p + first, n - first);
    self->total += n;
}

/* Length of the valid UTF-8 character at s[0..n), 0 if invalid, or -1 if
 * it is a valid start cut short by the end of the buffer. */
static int s_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    int len;
    unsigned char lo = 0x80, hi = 0xBF; /* bounds of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0; /* overlong */
    else if (c == 0xED)
        hi = 0x9F; /* surrogates */
    else if (c == 0xF0)
        lo = 0x90; /* overlong */
    else if (c == 0xF4)
        hi = 0x8F; /* beyond U+10FFFF */
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n)
            return -1;
        unsigned char b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return 0;
    }
    return len;
}

/* Cleans s[0..n) in place. With hold, an incomplete last character is
 * left out: returns the length cleaned (n otherwise). */
static size_t s_clean(char *s, size_t n, int hold)
{
    unsigned char *u = (unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int len = s_utf8_len(u + i, n - i);
        if (len < 0 && hold)
            return i;
        if (len <= 0) {
            u[i++] = '?';
            continue;
        }
        if (len == 1 && (u[i] < 0x20 && u[i] != '\t' && u[i] != '\n' && u[i] != '\r'))
            u[i] = '?';
        i += (size_t)len;
    }
    return n;
}

/* Number of UTF-8 continuation bytes (at most 3) starting s: what is left
 * of a character whose start was cut off. */
static size_t s_cut_start(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && i < 3 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i++;
    return i;
}

char *tail_clean(const char *s, size_t n, size_t max, int keep_end)
{
    int cut_end = 0;
    if (n > max) {
        if (keep_end) {
            s += n - max;
            size_t skip = s_cut_start(s, max);
            s += skip;
            n = max - skip;
        } else {
            n = max;
            cut_end = 1;
        }
    }
    char *out = malloc(n + 1);
    memcpy(out, s, n);
    out[s_clean(out, n, cut_end)] = '\0';
    return out;
}

/* Copies bytes [from, to) out of the ring. */
static void s_copy(const tail_t *self, uint64_t from, uint64_t to, char *out)
{
    size_t n = (size_t)(to - from), at = (size_t)(from % self->cap);
    size_t first = n < self->cap - at ? n : self->cap - at;
    memcpy(out, self->buf + at, first);
    memcpy(out + first, self->buf, n - first);
}

static uint64_t s_oldest(const tail_t *self)
{
    return self->total > self->cap ? self->total - self->cap : 0;
}

char *tail_text(const tail_t *self)
{
    uint64_t from = s_oldest(self);
    size_t n = (size_t)(self->total - from);
    char *out = malloc(n + 1);
    s_copy(self, from, self->total, out);
    size_t skip = from > 0 ? s_cut_start(out, n) : 0;
    memmove(out, out + skip, n - skip);
    n -= skip;
    out[s_clean(out, n, 0)] = '\0';
    return out;
}

int tail_pending(const tail_t *self)
{
    return self->total > self->taken;
}

char *tail_chunk(tail_t *self)
{
    uint64_t from = self->taken, oldest = s_oldest(self);
    if (from >= self->total)
        return NULL;
    int cut = from < oldest; /* bytes were lost: the chunk may start mid-character */
    if (cut)
        from = oldest;
    size_t n = (size_t)(self->total - from);
    char *out = malloc(n + 1);
    s_copy(self, from, self->total, out);
    size_t skip = cut ? s_cut_start(out, n) : 0;
    memmove(out, out + skip, n - skip);
    n -= skip;
    size_t used = s_clean(out, n, 1);
    if (used == 0) {
        free(out);
        self->taken = from + skip;
        return NULL;
    }
    out[used] = '\0';
    self->taken = from + skip + used;
    return out;
}

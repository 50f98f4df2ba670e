/*
 * heap.c - binary min-heap of embedded nodes; see heap.h.
 */
#include "common/heap.h"

#include <stdint.h>
#include <stdlib.h>

static void s_swap(heap_t *h, size_t a, size_t b)
{
    heap_node_t *t = h->v[a];
    h->v[a] = h->v[b];
    h->v[b] = t;
    h->v[a]->idx = (uint32_t)a;
    h->v[b]->idx = (uint32_t)b;
}

static void s_up(heap_t *h, size_t i)
{
    while (i > 0 && h->v[(i - 1) / 2]->key > h->v[i]->key) {
        s_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void s_down(heap_t *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->v[l]->key < h->v[m]->key)
            m = l;
        if (r < h->n && h->v[r]->key < h->v[m]->key)
            m = r;
        if (m == i)
            return;
        s_swap(h, i, m);
        i = m;
    }
}

void heap_push(heap_t *h, heap_node_t *node)
{
    if (h->n == h->cap) {
        if (h->cap >= HEAP_NONE / 2)
            abort(); /* positions are 32 bits */
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = realloc(h->v, h->cap * sizeof *h->v);
        if (!h->v)
            abort();
    }
    node->idx = (uint32_t)h->n;
    h->v[h->n++] = node;
    s_up(h, node->idx);
}

void heap_remove(heap_t *h, heap_node_t *node)
{
    size_t i = node->idx;
    if (i >= h->n || h->v[i] != node)
        return;
    h->n--;
    if (i != h->n) {
        h->v[i] = h->v[h->n];
        h->v[i]->idx = (uint32_t)i;
        s_down(h, i);
        s_up(h, i);
    }
    node->idx = HEAP_NONE;
}

void heap_update(heap_t *h, heap_node_t *node)
{
    if (node->idx < h->n && h->v[node->idx] == node) {
        s_up(h, node->idx);
        s_down(h, node->idx);
    }
}

void *heap_top(const heap_t *h)
{
    return h->n ? h->v[0] : NULL;
}

void heap_free(heap_t *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

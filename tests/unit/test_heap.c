/*
 * test_heap.c - the min-heap of embedded nodes: random pushes, removes and
 * re-keyings against a plain array, in a struct that puts a 4-byte field
 * right after its 12-byte node (as the master's trigger record does).
 */
#include "tests/unit/test.h"

#include "common/heap.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    heap_node_t hn;
    uint32_t tag; /* in the bytes a 16-byte node would pad */
    int64_t other;
} item_t;

_Static_assert(sizeof(heap_node_t) == 12, "heap_node_t is 12 bytes");
_Static_assert(offsetof(item_t, tag) == 12, "a 4-byte field fits right after the node");

enum { N = 500 };

/* The smallest key of the items in the heap per `in`, or INT64_MAX. */
static int64_t s_min(const item_t *items, const int *in)
{
    int64_t m = INT64_MAX;
    for (int i = 0; i < N; i++)
        if (in[i] && items[i].hn.key < m)
            m = items[i].hn.key;
    return m;
}

TEST(heap_random_operations_keep_the_smallest_on_top)
{
    static item_t items[N];
    int in[N] = {0};
    heap_t h = {0};
    uint32_t r = 12345;
    int bad_top = 0, bad_tag = 0, bad_idx = 0;
    for (int i = 0; i < N; i++) {
        items[i].hn.idx = HEAP_NONE;
        items[i].tag = (uint32_t)i * 7u;
    }
    for (int step = 0; step < 20000; step++) {
        r = r * 1103515245u + 12345u;
        int i = (int)(r >> 8) % N, op = (int)(r >> 4) % 3;
        int64_t key = (int64_t)((r >> 12) % 1000) - 500;
        if (op == 0 && !in[i]) {
            items[i].hn.key = key;
            heap_push(&h, &items[i].hn);
            in[i] = 1;
        } else if (op == 1) {
            heap_remove(&h, &items[i].hn); /* also when not in it: a no-op */
            bad_idx += items[i].hn.idx != HEAP_NONE;
            in[i] = 0;
        } else if (in[i]) {
            items[i].hn.key = key;
            heap_update(&h, &items[i].hn);
        }
        const item_t *top = heap_top(&h);
        int64_t m = s_min(items, in);
        bad_top += top ? top->hn.key != m : m != INT64_MAX;
    }
    for (int i = 0; i < N; i++)
        bad_tag += items[i].tag != (uint32_t)i * 7u;
    CHECK_INT(bad_top, 0);
    CHECK_INT(bad_idx, 0);
    CHECK_INT(bad_tag, 0); /* the heap never writes past its node */
    /* Popped in order. */
    int64_t last = INT64_MIN;
    int out_of_order = 0;
    for (item_t *t; (t = heap_top(&h));) {
        out_of_order += t->hn.key < last;
        last = t->hn.key;
        heap_remove(&h, &t->hn);
    }
    CHECK_INT(out_of_order, 0);
    heap_free(&h);
}

/*
 * heap.h - a binary min-heap of nodes embedded in the caller's structs.
 *
 * A struct that can be scheduled embeds a heap_node_t as its FIRST member,
 * so a node pointer is also a pointer to the struct. The node keeps its
 * position, so removing or re-keying an item is O(log n) without a search.
 * Used by the master for fire times (sched.c) and for retries and
 * deadlines (dispatch.c).
 */
#ifndef SKED_HEAP_H
#define SKED_HEAP_H

#include <stddef.h>
#include <stdint.h>

/* 12 bytes, aligned to 4 (not 16 and 8): a struct that embeds a node can
 * put a 4-byte field right after it. The master's trigger record does,
 * one per trigger (master/sched.c). No field's address is taken. */
typedef struct __attribute__((packed, aligned(4))) {
    int64_t key;  /* smallest first */
    uint32_t idx; /* position in the heap; HEAP_NONE when not in it */
} heap_node_t;

#define HEAP_NONE UINT32_MAX

typedef struct {
    heap_node_t **v;
    size_t n, cap;
} heap_t;

/* Adds a node (not already in a heap). Can't fail (aborts on no memory). */
void heap_push(heap_t *h, heap_node_t *node);
/* Removes a node; does nothing if it is not in h. */
void heap_remove(heap_t *h, heap_node_t *node);
/* Restores order after node->key changed. */
void heap_update(heap_t *h, heap_node_t *node);
/* The struct whose node is the smallest (its node is its first member),
 * or NULL. */
void *heap_top(const heap_t *h);
/* Frees the array (not the nodes). */
void heap_free(heap_t *h);

#endif

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

typedef struct {
    int64_t key; /* smallest first */
    size_t idx;  /* position in the heap; SIZE_MAX when not in it */
} heap_node_t;

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
/* The smallest node, or NULL. */
heap_node_t *heap_top(const heap_t *h);
/* Frees the array (not the nodes). */
void heap_free(heap_t *h);

#endif

/*
 * store.h - MongoDB access shared by gateways and masters.
 *
 * One store_t is one mongoc client (single-threaded) on the database named
 * in the URI. Collections are created lazily and cached. Errors are mapped
 * to ERR_CONFLICT (duplicate key: an insert lost its race), ERR_RETRY (the
 * server is unreachable: worth retrying) or ERR_SYS.
 *
 * The bj_* helpers convert between BSON documents and jansson values:
 * BSON dates become ISO-8601 strings, ObjectIds hex strings.
 */
#ifndef SKED_STORE_H
#define SKED_STORE_H

#include "common/err.h"

#include <jansson.h>
#include <mongoc/mongoc.h>

typedef struct store store_t;

/* Connects lazily: a bad URI fails here, an unreachable server on first use.
 * Short server-selection and socket timeouts (10 s) are set unless the URI
 * has its own. */
store_t *store_new(const char *uri, err_t *err);
/* The same with a socket timeout of socket_timeout_ms: for a connection
 * whose one round trip may take long and holds up nothing (a read on a
 * thread of its own). */
store_t *store_new_patient(const char *uri, int socket_timeout_ms, err_t *err);
void store_destroy(store_t **self_p);

/* A cached collection handle, borrowed (a fixed set of names). */
mongoc_collection_t *store_coll(store_t *store, const char *name);
/* A new handle, the caller's (mongoc_collection_destroy): for names that
 * come and go (the change windows). */
mongoc_collection_t *store_coll_new(store_t *store, const char *name);

/* Reads the document with _id `id` from coll into *out (initialised by this
 * call when found). Returns 1 found, 0 absent, or a negative code. */
int store_get_by_id(store_t *store, const char *coll, const char *id, bson_t *out, err_t *err);

/* The most updates sent in one command. FerretDB v1.24 holds one pooled
 * SQLite connection per statement of an `update` command until the
 * command ends, out of 100, so a command of about 100 statements waits
 * forever (150 hung here; its handler/msg_update.go defers each
 * statement's close). 16 from each of a few masters stays well clear. */
#define STORE_BULK_MAX 16

/* Applies updates[i] to the document of coll with _id ids[i], in order,
 * STORE_BULK_MAX to a command (ordered bulks). Returns how many were
 * applied before the first failure (n if none; *berr then says why);
 * adds to *matched how many found their document. */
size_t store_update_by_ids(store_t *store, const char *coll, const char *const *ids,
                           bson_t *const *updates, size_t n, int64_t *matched,
                           bson_error_t *berr);

/* Inserts docs[0..n) into coll in order, STORE_BULK_MAX to a command
 * (ordered bulks); a document whose _id is taken counts as inserted (it
 * was, before). Returns how many were inserted before the first other
 * failure (n if none; *berr then says why). */
size_t store_insert_new(store_t *store, const char *coll, bson_t *const *docs, size_t n,
                        bson_error_t *berr);

/* Deletes the documents of coll with _id ids[i], in order, by `_id` alone,
 * STORE_BULK_MAX to a command (ordered bulks); returns how many were
 * deleted or absent before the first failure (n if none). */
size_t store_delete_by_ids(store_t *store, const char *coll, const char *const *ids, size_t n,
                           bson_error_t *berr);

/* ---- job outcomes ----------------------------------------------------
 * A job's final outcome is written as a record of its own in
 * `job_results` (inserting costs the store a tenth of updating the job:
 * docs/BENCHMARKS.md), {_id: job id, partition, recorded_at, set: the
 * job's fields it sets, push: its `attempts` entry}; its master folds it
 * into the job document later, when idle (writer.c). A reader that needs
 * a job's status reads it through these. */
#define STORE_RESULTS "job_results"

/* out (initialised here) = job with the record's `set` fields replacing
 * the job's and its `push` appended to `attempts` unless already there. */
void store_job_overlay(const bson_t *job, const bson_t *record, bson_t *out);

/* store_get_by_id of a job, its outcome record laid over it. */
int store_get_job(store_t *store, const char *id, bson_t *out, err_t *err);

/* ---- trigger changes -----------------------------------------------
 * Before each write of a trigger a gateway inserts {trigger_id,
 * partition, at} into the change window of the minute it writes in
 * (its clock): `trigger_changes_<YYYYMMDDHHMM>`, UTC. A master that
 * restores a partition from a snapshot reads the windows written since
 * (master/snapshot.c); windows are dropped once older than
 * STORE_CHANGES_KEEP_MS. One collection a minute so that a reader scans
 * only the minutes it needs (every filter but `_id` equality is a scan
 * on FerretDB) and old ones go by a drop, not a scan. */
#define STORE_CHANGES_PREFIX "trigger_changes_"
#define STORE_CHANGES_WINDOW_MS 60000
#define STORE_CHANGES_KEEP_MS 3600000

/* The name of the change window holding time at_ms; can't fail. */
void store_changes_name(int64_t at_ms, char *out, size_t size);

/* Notes that trigger_id (of partition) is about to be written; 0 or a
 * negative code (then the trigger must not be written). */
int store_note_change(store_t *store, const char *trigger_id, int partition, err_t *err);

/* Drops the change windows wholly before cutoff_ms; how many, or a
 * negative code. */
int store_drop_changes_before(store_t *store, int64_t cutoff_ms, err_t *err);

/* Round trip to the server; 0 or ERR_RETRY. */
int store_ping(store_t *store, err_t *err);

/* Creates the collections' indexes; failures (some MongoDB-compatible
 * servers lack TTL indexes) are logged once and otherwise ignored. */
void store_ensure_indexes(store_t *store);

/* Maps a driver error to ERR_CONFLICT / ERR_RETRY / ERR_SYS and fills err. */
int store_error(const bson_error_t *error, const char *what, err_t *err);

/* Converts a BSON document to a new JSON object (the caller's). */
json_t *bj_to_json(const bson_t *doc);

/* Appends a JSON value under key; integers become int64, reals double. */
void bj_append(bson_t *dst, const char *key, const json_t *value);

/* Appends `key: {$in: [vals...]}` (int32 values) to filter. */
void bj_append_in_int32(bson_t *filter, const char *key, const int *vals, int n);
/* The same for strings. */
void bj_append_in_utf8(bson_t *filter, const char *key, const char *const *vals, size_t n);

/* Reads an int64-ish / date / string field of doc; default if absent. */
int64_t bj_get_int(const bson_t *doc, const char *dotted, int64_t def);
int64_t bj_get_date(const bson_t *doc, const char *dotted, int64_t def);
const char *bj_get_str(const bson_t *doc, const char *dotted, const char *def);

#endif

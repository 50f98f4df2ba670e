/*
 * token.h - verifies and mints the JWT bearer tokens the gateway accepts.
 *
 * A verifier pins exactly one algorithm (HS256 with a shared secret, or
 * RS256 with an RSA public key) and checks, in this order: size and shape
 * (three base64url parts, at most TOKEN_MAX_LEN bytes), the header's "alg"
 * against the pinned one, the signature (through libjwt, always with the
 * key), then the claims: "exp" (required, integer), "nbf" (optional),
 * "sub" (required), "iss"/"aud" when configured, and the role. libjwt
 * itself checks none of the claims and would accept "alg": "none" or an
 * HS256 token keyed with an RSA public key, which is why the header is
 * parsed here before libjwt sees the token.
 *
 * A verifier is immutable after creation, so one can be shared by threads.
 * Messages left in err never contain the token or the key.
 */
#ifndef SKED_TOKEN_H
#define SKED_TOKEN_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

/* Tokens longer than this are rejected before any decoding. */
#define TOKEN_MAX_LEN 8192

typedef enum {
    TOKEN_OK = 0,
    TOKEN_MISSING,       /* NULL or empty token */
    TOKEN_MALFORMED,     /* size, shape, base64url or JSON */
    TOKEN_BAD_ALG,       /* header "alg" is not the pinned algorithm */
    TOKEN_BAD_SIGNATURE, /* empty or wrong signature */
    TOKEN_EXPIRED,       /* exp <= now - leeway */
    TOKEN_NOT_YET_VALID, /* nbf > now + leeway */
    TOKEN_BAD_CLAIMS,    /* exp/sub/iss/aud/role missing or of the wrong type */
} token_reason_t;

/* Short lower-case name of a reason ("expired", "bad_signature", ...) for
 * metrics labels and logs; "unknown" for values outside the enum. */
const char *token_reason_name(token_reason_t r);

typedef struct {
    char sub[256];  /* user id: non-empty, at most 255 bytes, no NUL */
    char role[32];  /* "admin" or "user" */
    int is_admin;   /* 1 iff role is "admin" */
    int64_t exp;    /* seconds since the epoch */
    int64_t iat;    /* seconds since the epoch; 0 if the token has none */
} token_claims_t;

typedef struct token_verifier token_verifier_t;

/* HS256 verifier. The secret is copied; any non-empty secret is accepted
 * but at least 32 random bytes are recommended (RFC 7518 3.2). issuer and
 * audience are optional: NULL means not checked; when set, "iss" must equal
 * issuer and "aud" must equal audience or be an array containing it.
 * leeway_s (>= 0) is the clock skew allowed on exp and nbf. Returns NULL
 * with err filled on bad arguments. */
token_verifier_t *token_verifier_new_hs256(const char *secret, size_t secret_len,
                                           const char *issuer, const char *audience,
                                           int leeway_s, err_t *err);

/* RS256 verifier from a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) holding an
 * RSA key of at least 2048 bits; the PEM is copied. Other arguments as for
 * token_verifier_new_hs256. Returns NULL with err filled if the key cannot
 * be used. */
token_verifier_t *token_verifier_new_rs256(const char *public_key_pem, size_t len,
                                           const char *issuer, const char *audience,
                                           int leeway_s, err_t *err);

/* NULL-safe; sets *self_p to NULL and scrubs the key. */
void token_verifier_destroy(token_verifier_t **self_p);

/* Verifies a compact JWS of len bytes (without the "Bearer " prefix; need
 * not be NUL-terminated). Returns TOKEN_OK and fills *out, or another
 * reason with *out zeroed and a message in err (err->code ERR_INVALID, or
 * ERR_SYS if memory ran out). Role: "admin" if claim "role" is the string
 * "admin" or claim "roles" is an array containing "admin", else "user";
 * "role" that is not a string or "roles" that is not an array is
 * TOKEN_BAD_CLAIMS. */
token_reason_t token_verify(const token_verifier_t *v, const char *token, size_t len,
                            token_claims_t *out, err_t *err);

/* Mints an HS256 token with claims sub, role ("admin" or "user"; NULL means
 * "user"), iat = now and exp = now + ttl_s (ttl_s > 0), for operators and
 * `make run`. Returns a string the caller frees with free(), or NULL with
 * err filled. */
char *token_mint_hs256(const char *secret, size_t secret_len, const char *sub,
                       const char *role, int64_t ttl_s, err_t *err);

#endif

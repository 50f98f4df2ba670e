/*
 * token.c - JWT verification and minting for the gateway; see token.h.
 *
 * libjwt 1.10.2 is used only for what it does right: the HMAC/RSA signature
 * check and encoding. Everything it gets wrong or leaves out is done here
 * before or after it runs:
 *   - its jwt_decode() trusts the header's "alg": it accepts "none", skips
 *     the check when the key is NULL or its length is 0, and verifies an
 *     HS256 token with whatever key it was given (an RSA public key PEM
 *     turns into an HMAC secret). So the header is decoded and its "alg"
 *     compared with the verifier's one pinned algorithm first, the key is
 *     never empty, and after a successful decode the algorithm libjwt used
 *     is compared again.
 *   - it compares "alg" and "typ" case-insensitively and its base64 decoder
 *     accepts junk; we accept only exact "HS256"/"RS256" and strict,
 *     unpadded, canonical base64url.
 *   - it checks no claims. Claims are read from our own parse of the
 *     payload (duplicate keys rejected), not from libjwt's.
 * A verifier is read-only after creation; token_verify allocates only
 * temporaries, so concurrent calls on one verifier are safe.
 */
#include "common/token.h"

#include "common/clock.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#define RSA_MIN_BITS 2048
#define SUB_MAX_LEN (sizeof(((token_claims_t *)0)->sub) - 1)

struct token_verifier {
    jwt_alg_t alg;        /* the one algorithm accepted */
    const char *alg_name; /* its "alg" header value, compared exactly */
    unsigned char *key;   /* HMAC secret, or PEM followed by a NUL */
    size_t key_len;       /* without that NUL */
    char *issuer;         /* NULL = "iss" not checked */
    char *audience;       /* NULL = "aud" not checked */
    int leeway_s;
};

const char *token_reason_name(token_reason_t r)
{
    switch (r) {
    case TOKEN_OK: return "ok";
    case TOKEN_MISSING: return "missing";
    case TOKEN_MALFORMED: return "malformed";
    case TOKEN_BAD_ALG: return "bad_alg";
    case TOKEN_BAD_SIGNATURE: return "bad_signature";
    case TOKEN_EXPIRED: return "expired";
    case TOKEN_NOT_YET_VALID: return "not_yet_valid";
    case TOKEN_BAD_CLAIMS: return "bad_claims";
    }
    return "unknown";
}

/* ---- verifier lifecycle ---------------------------------------------- */

static token_verifier_t *s_verifier_new(jwt_alg_t alg, const char *alg_name,
                                        const void *key, size_t key_len, const char *issuer,
                                        const char *audience, int leeway_s, err_t *err)
{
    if (leeway_s < 0) {
        err_set(err, ERR_INVALID, "cannot create token verifier: leeway %d is negative",
                leeway_s);
        return NULL;
    }
    if ((issuer && !*issuer) || (audience && !*audience)) {
        err_set(err, ERR_INVALID,
                "cannot create token verifier: issuer and audience must be NULL or non-empty");
        return NULL;
    }
    token_verifier_t *self = calloc(1, sizeof *self);
    if (!self)
        goto out_nomem;
    self->alg = alg;
    self->alg_name = alg_name;
    self->leeway_s = leeway_s;
    self->key_len = key_len;
    self->key = malloc(key_len + 1);
    if (!self->key)
        goto out_nomem;
    memcpy(self->key, key, key_len);
    self->key[key_len] = '\0';
    if (issuer && !(self->issuer = strdup(issuer)))
        goto out_nomem;
    if (audience && !(self->audience = strdup(audience)))
        goto out_nomem;
    return self;

out_nomem:
    token_verifier_destroy(&self);
    err_set(err, ERR_SYS, "cannot create token verifier: out of memory");
    return NULL;
}

token_verifier_t *token_verifier_new_hs256(const char *secret, size_t secret_len,
                                           const char *issuer, const char *audience,
                                           int leeway_s, err_t *err)
{
    /* An empty key would make jwt_decode() skip the signature check. */
    if (!secret || secret_len == 0) {
        err_set(err, ERR_INVALID, "cannot create token verifier: secret is empty");
        return NULL;
    }
    if (secret_len > INT_MAX) {
        err_set(err, ERR_INVALID, "cannot create token verifier: secret is too long");
        return NULL;
    }
    return s_verifier_new(JWT_ALG_HS256, "HS256", secret, secret_len, issuer, audience,
                          leeway_s, err);
}

/* Checks that pem is what libjwt will load at verify time: an RSA
 * SubjectPublicKeyInfo of at least RSA_MIN_BITS, and nothing private. */
static int s_check_rsa_pem(const char *pem, size_t len, err_t *err)
{
    int rc = 0;
    if (memchr(pem, '\0', len))
        return err_set(err, ERR_INVALID, "cannot create token verifier: public key has a NUL byte");
    /* pem is not NUL-terminated; look for a private key by hand. */
    static const char priv[] = "PRIVATE KEY";
    for (size_t i = 0; i + sizeof priv - 1 <= len; i++)
        if (memcmp(pem + i, priv, sizeof priv - 1) == 0)
            return err_set(err, ERR_INVALID,
                           "cannot create token verifier: PEM holds a private key, "
                           "give the public key only");
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return err_set(err, ERR_SYS, "cannot create token verifier: out of memory");
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (!pkey) {
        rc = err_set(err, ERR_INVALID,
                     "cannot create token verifier: no PEM public key found");
        goto out_free_bio;
    }
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        rc = err_set(err, ERR_INVALID, "cannot create token verifier: public key is not RSA");
        goto out_free_key;
    }
    if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS) {
        rc = err_set(err, ERR_INVALID,
                     "cannot create token verifier: RSA key has %d bits, at least %d required",
                     EVP_PKEY_get_bits(pkey), RSA_MIN_BITS);
        goto out_free_key;
    }

out_free_key:
    EVP_PKEY_free(pkey);
out_free_bio:
    BIO_free(bio);
    ERR_clear_error(); /* leave no OpenSSL errors queued for unrelated callers */
    return rc;
}

token_verifier_t *token_verifier_new_rs256(const char *public_key_pem, size_t len,
                                           const char *issuer, const char *audience,
                                           int leeway_s, err_t *err)
{
    if (!public_key_pem || len == 0) {
        err_set(err, ERR_INVALID, "cannot create token verifier: public key is empty");
        return NULL;
    }
    if (len > INT_MAX) {
        err_set(err, ERR_INVALID, "cannot create token verifier: public key is too long");
        return NULL;
    }
    if (s_check_rsa_pem(public_key_pem, len, err) < 0)
        return NULL;
    return s_verifier_new(JWT_ALG_RS256, "RS256", public_key_pem, len, issuer, audience,
                          leeway_s, err);
}

void token_verifier_destroy(token_verifier_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    token_verifier_t *self = *self_p;
    if (self->key) {
        OPENSSL_cleanse(self->key, self->key_len);
        free(self->key);
    }
    free(self->issuer);
    free(self->audience);
    free(self);
    *self_p = NULL;
}

/* ---- verification ------------------------------------------------------ */

/* Fills err with "cannot verify token: <why>" and returns reason. */
__attribute__((format(printf, 4, 5))) static token_reason_t
s_fail(err_t *err, token_reason_t reason, int code, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    err_set(err, code, "cannot verify token: %s", why);
    return reason;
}

static int s_b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes unpadded, canonical base64url (unused low bits must be zero) into
 * a malloc'd, NUL-terminated buffer. Returns 0, ERR_INVALID or ERR_SYS. */
static int s_b64url_decode(const char *in, size_t n, unsigned char **out_p, size_t *out_len)
{
    if (n % 4 == 1)
        return ERR_INVALID;
    unsigned char *out = malloc(n / 4 * 3 + 3);
    if (!out)
        return ERR_SYS;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int val = s_b64url_value(in[i]);
        if (val < 0)
            goto out_invalid;
        acc = (acc << 6) | (uint32_t)val;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        goto out_invalid;
    out[o] = '\0';
    *out_p = out;
    *out_len = o;
    return 0;

out_invalid:
    free(out);
    return ERR_INVALID;
}

/* Decodes one base64url part into a JSON object (duplicate keys rejected).
 * Returns 0, ERR_INVALID or ERR_SYS. */
static int s_decode_part(const char *in, size_t n, json_t **obj_p)
{
    unsigned char *buf;
    size_t buf_len;
    int rc = s_b64url_decode(in, n, &buf, &buf_len);
    if (rc < 0)
        return rc;
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)buf, buf_len, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return ERR_INVALID;
    }
    *obj_p = obj;
    return 0;
}

/* Checks size and shape: three non-empty-ish base64url parts. Sets the
 * offsets of the two dots. */
static token_reason_t s_check_shape(const char *token, size_t len, size_t *dot1, size_t *dot2,
                                    err_t *err)
{
    if (len > TOKEN_MAX_LEN)
        return s_fail(err, TOKEN_MALFORMED, ERR_INVALID, "token is %zu bytes, limit is %d", len,
                      TOKEN_MAX_LEN);
    int dots = 0;
    for (size_t i = 0; i < len; i++) {
        if (token[i] == '.') {
            if (dots == 0)
                *dot1 = i;
            else if (dots == 1)
                *dot2 = i;
            dots++;
        } else if (s_b64url_value(token[i]) < 0) {
            return s_fail(err, TOKEN_MALFORMED, ERR_INVALID,
                          "token has a byte outside base64url at offset %zu", i);
        }
    }
    if (dots != 2)
        return s_fail(err, TOKEN_MALFORMED, ERR_INVALID, "token has %d parts, expected 3",
                      dots + 1);
    if (*dot1 == 0 || *dot2 == *dot1 + 1)
        return s_fail(err, TOKEN_MALFORMED, ERR_INVALID, "header or payload is empty");
    return TOKEN_OK;
}

/* Short alphanumeric alg names are echoed in messages; anything else from
 * the outside is not. */
static const char *s_printable_alg(const json_t *alg)
{
    const char *s = json_string_value(alg);
    size_t n = json_string_length(alg);
    if (!s || n == 0 || n > 16)
        return "?";
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]))
            return "?";
    return s;
}

/* The header must name exactly the pinned algorithm; "typ" is checked as
 * libjwt would (so a bad one reads as malformed, not as a bad signature),
 * and no "crit" extension is understood. */
static token_reason_t s_check_header(const token_verifier_t *v, const json_t *hdr, err_t *err)
{
    const json_t *alg = json_object_get(hdr, "alg");
    if (!json_is_string(alg))
        return s_fail(err, TOKEN_BAD_ALG, ERR_INVALID, "header has no string alg");
    if (json_string_length(alg) != strlen(v->alg_name) ||
        strcmp(json_string_value(alg), v->alg_name) != 0)
        return s_fail(err, TOKEN_BAD_ALG, ERR_INVALID, "header alg '%s' is not the expected %s",
                      s_printable_alg(alg), v->alg_name);
    const json_t *typ = json_object_get(hdr, "typ");
    if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        return s_fail(err, TOKEN_MALFORMED, ERR_INVALID, "header typ is not JWT");
    if (json_object_get(hdr, "crit"))
        return s_fail(err, TOKEN_MALFORMED, ERR_INVALID, "header has crit extensions");
    return TOKEN_OK;
}

/* Runs libjwt's signature check with the pinned key. The header has been
 * checked already; the algorithm libjwt used is checked again anyway. */
static token_reason_t s_check_signature(const token_verifier_t *v, const char *token, size_t len,
                                        err_t *err)
{
    char *copy = malloc(len + 1); /* jwt_decode wants a C string */
    if (!copy)
        return s_fail(err, TOKEN_BAD_SIGNATURE, ERR_SYS, "out of memory");
    memcpy(copy, token, len);
    copy[len] = '\0';
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, copy, v->key, (int)v->key_len);
    free(copy);
    token_reason_t reason = TOKEN_OK;
    if (rc == ENOMEM)
        reason = s_fail(err, TOKEN_BAD_SIGNATURE, ERR_SYS, "out of memory checking signature");
    else if (rc != 0 || !jwt || jwt_get_alg(jwt) != v->alg)
        reason = s_fail(err, TOKEN_BAD_SIGNATURE, ERR_INVALID, "signature does not match");
    jwt_free(jwt);
    ERR_clear_error(); /* libjwt leaves OpenSSL errors queued on failure */
    return reason;
}

/* Reads an optional integer claim; returns -1 if present but not one. */
static int s_int_claim(const json_t *claims, const char *name, int *present, int64_t *val)
{
    const json_t *j = json_object_get(claims, name);
    *present = j != NULL;
    *val = 0;
    if (!j)
        return 0;
    if (!json_is_integer(j))
        return -1;
    *val = (int64_t)json_integer_value(j);
    return 0;
}

static int s_string_equals(const json_t *j, const char *s)
{
    return json_is_string(j) && json_string_length(j) == strlen(s) &&
           memcmp(json_string_value(j), s, strlen(s)) == 0;
}

/* "aud" is a string or an array of strings (RFC 7519 4.1.3). */
static int s_audience_matches(const json_t *aud, const char *want)
{
    if (json_is_array(aud)) {
        size_t i;
        const json_t *item;
        json_array_foreach(aud, i, item)
            if (s_string_equals(item, want))
                return 1;
        return 0;
    }
    return s_string_equals(aud, want);
}

/* Sets *is_admin from "role" (a string) or "roles" (an array); a string
 * other than "admin" means user. Returns -1 if either has the wrong type. */
static int s_role(const json_t *claims, int *is_admin)
{
    const json_t *role = json_object_get(claims, "role");
    const json_t *roles = json_object_get(claims, "roles");
    *is_admin = 0;
    if (role && !json_is_string(role))
        return -1;
    if (roles && !json_is_array(roles))
        return -1;
    if (role && s_string_equals(role, "admin"))
        *is_admin = 1;
    size_t i;
    const json_t *item;
    json_array_foreach(roles, i, item)
        if (s_string_equals(item, "admin"))
            *is_admin = 1;
    return 0;
}

static token_reason_t s_check_claims(const token_verifier_t *v, const json_t *claims,
                                     int64_t now, token_claims_t *out, err_t *err)
{
    int has_exp, has_nbf, has_iat;
    int64_t exp, nbf, iat;
    if (s_int_claim(claims, "exp", &has_exp, &exp) < 0 || !has_exp)
        return s_fail(err, TOKEN_BAD_CLAIMS, ERR_INVALID, "exp is missing or not an integer");
    if (s_int_claim(claims, "nbf", &has_nbf, &nbf) < 0)
        return s_fail(err, TOKEN_BAD_CLAIMS, ERR_INVALID, "nbf is not an integer");
    if (s_int_claim(claims, "iat", &has_iat, &iat) < 0)
        return s_fail(err, TOKEN_BAD_CLAIMS, ERR_INVALID, "iat is not an integer");
    /* now is a current time and leeway_s an int: neither side overflows. */
    if (exp <= now - v->leeway_s)
        return s_fail(err, TOKEN_EXPIRED, ERR_INVALID, "token has expired");
    if (has_nbf && nbf > now + v->leeway_s)
        return s_fail(err, TOKEN_NOT_YET_VALID, ERR_INVALID, "token is not valid yet (nbf)");

    const json_t *sub = json_object_get(claims, "sub");
    if (!json_is_string(sub) || json_string_length(sub) == 0)
        return s_fail(err, TOKEN_BAD_CLAIMS, ERR_INVALID, "sub is missing or not a string");
    size_t sub_len = json_string_length(sub);
    if (sub_len > SUB_MAX_LEN || memchr(json_string_value(sub), '\0', sub_len))
        return s_fail(err, TOKEN_BAD_CLAIMS, ERR_INVALID,
                      "sub is longer than %zu bytes or has a NUL", SUB_MAX_LEN);

    if (v->issuer && !s_string_equals(json_object_get(claims, "iss"), v->issuer))
        return s_fail(err, TOKEN_BAD_CLAIMS, ERR_INVALID, "iss is not '%s'", v->issuer);
    if (v->audience && !s_audience_matches(json_object_get(claims, "aud"), v->audience))
        return s_fail(err, TOKEN_BAD_CLAIMS, ERR_INVALID, "aud does not include '%s'",
                      v->audience);
    int is_admin;
    if (s_role(claims, &is_admin) < 0)
        return s_fail(err, TOKEN_BAD_CLAIMS, ERR_INVALID,
                      "role is not a string or roles is not an array");

    memcpy(out->sub, json_string_value(sub), sub_len);
    out->sub[sub_len] = '\0';
    snprintf(out->role, sizeof out->role, "%s", is_admin ? "admin" : "user");
    out->is_admin = is_admin;
    out->exp = exp;
    out->iat = iat;
    return TOKEN_OK;
}

token_reason_t token_verify(const token_verifier_t *v, const char *token, size_t len,
                            token_claims_t *out, err_t *err)
{
    assert(v && out);
    memset(out, 0, sizeof *out);
    if (!token || len == 0)
        return s_fail(err, TOKEN_MISSING, ERR_INVALID, "no token given");

    size_t dot1 = 0, dot2 = 0;
    token_reason_t reason = s_check_shape(token, len, &dot1, &dot2, err);
    if (reason != TOKEN_OK)
        return reason;

    json_t *hdr = NULL, *claims = NULL;
    int rc = s_decode_part(token, dot1, &hdr);
    if (rc < 0) {
        reason = s_fail(err, TOKEN_MALFORMED, rc,
                        rc == ERR_SYS ? "out of memory" : "header is not a base64url JSON object");
        goto out;
    }
    if ((reason = s_check_header(v, hdr, err)) != TOKEN_OK)
        goto out;
    if (dot2 + 1 == len) {
        reason = s_fail(err, TOKEN_BAD_SIGNATURE, ERR_INVALID, "signature is empty");
        goto out;
    }
    rc = s_decode_part(token + dot1 + 1, dot2 - dot1 - 1, &claims);
    if (rc < 0) {
        reason = s_fail(err, TOKEN_MALFORMED, rc,
                        rc == ERR_SYS ? "out of memory" : "payload is not a base64url JSON object");
        goto out;
    }
    if ((reason = s_check_signature(v, token, len, err)) != TOKEN_OK)
        goto out;
    reason = s_check_claims(v, claims, clock_wall_ms() / 1000, out, err);

out:
    json_decref(hdr);
    json_decref(claims);
    if (reason != TOKEN_OK)
        memset(out, 0, sizeof *out);
    return reason;
}

/* ---- minting ---------------------------------------------------------- */

static char *s_mint(const char *secret, size_t secret_len, const json_t *claims, err_t *err)
{
    char *out = NULL;
    jwt_t *jwt = NULL;
    char *claims_json = json_dumps(claims, JSON_COMPACT);
    if (!claims_json || jwt_new(&jwt) != 0)
        goto out_nomem;
    if (jwt_add_grants_json(jwt, claims_json) != 0 ||
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)secret_len) != 0 ||
        !(out = jwt_encode_str(jwt)))
        goto out_nomem;
    goto out_free;

out_nomem:
    err_set(err, ERR_SYS, "cannot mint token: libjwt failed");
out_free:
    jwt_free(jwt);
    free(claims_json);
    ERR_clear_error();
    return out;
}

char *token_mint_hs256(const char *secret, size_t secret_len, const char *sub,
                       const char *role, int64_t ttl_s, err_t *err)
{
    if (!role)
        role = "user";
    if (!secret || secret_len == 0 || secret_len > INT_MAX) {
        err_set(err, ERR_INVALID, "cannot mint token: secret is empty or too long");
        return NULL;
    }
    if (!sub || !*sub || strlen(sub) > SUB_MAX_LEN) {
        err_set(err, ERR_INVALID, "cannot mint token: sub must be 1 to %zu bytes", SUB_MAX_LEN);
        return NULL;
    }
    if (strcmp(role, "admin") != 0 && strcmp(role, "user") != 0) {
        err_set(err, ERR_INVALID, "cannot mint token: role '%.31s' is not admin or user", role);
        return NULL;
    }
    int64_t now = clock_wall_ms() / 1000;
    if (ttl_s <= 0 || ttl_s > INT64_MAX - now) {
        err_set(err, ERR_INVALID, "cannot mint token: ttl %lld s is out of range",
                (long long)ttl_s);
        return NULL;
    }
    json_t *claims = json_pack("{s:s, s:s, s:I, s:I}", "sub", sub, "role", role, "iat",
                               (json_int_t)now, "exp", (json_int_t)(now + ttl_s));
    if (!claims) {
        err_set(err, ERR_INVALID, "cannot mint token: sub is not valid UTF-8");
        return NULL;
    }
    char *tok = s_mint(secret, secret_len, claims, err);
    json_decref(claims);
    return tok;
}

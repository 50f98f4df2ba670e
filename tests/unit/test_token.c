/*
 * test_token.c - JWT verification and minting.
 *
 * Tokens are assembled by hand here (base64url of literal JSON, signed with
 * OpenSSL HMAC / EVP directly), not only with token_mint_hs256, so the
 * verifier is tested against what an attacker can send rather than against
 * what libjwt happens to produce.
 */
#include "tests/unit/test.h"

#include "common/token.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#define SECRET "0123456789abcdef0123456789abcdef" /* 32 bytes */
#define HS256_HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define RS256_HDR "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"

/* ---- helpers ----------------------------------------------------------- */

static char *s_b64url(const void *data, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = data;
    char *out = malloc(n / 3 * 4 + 5);
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
    }
    out[o] = '\0';
    return out;
}

/* "b64(hdr).b64(payload)", malloc'd. */
static char *s_signing_input(const char *hdr, const char *payload)
{
    char *h = s_b64url(hdr, strlen(hdr)), *p = s_b64url(payload, strlen(payload));
    char *out = malloc(strlen(h) + strlen(p) + 2);
    sprintf(out, "%s.%s", h, p);
    free(h);
    free(p);
    return out;
}

/* "input.sig_b64", malloc'd; frees input. */
static char *s_append_sig(char *input, const unsigned char *sig, size_t sig_len)
{
    char *s = s_b64url(sig, sig_len);
    char *out = malloc(strlen(input) + strlen(s) + 2);
    sprintf(out, "%s.%s", input, s);
    free(input);
    free(s);
    return out;
}

static char *s_hmac(const EVP_MD *md, const char *hdr, const char *payload, const void *key,
                    size_t key_len)
{
    char *input = s_signing_input(hdr, payload);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(md, key, (int)key_len, (const unsigned char *)input, strlen(input), mac, &mac_len);
    return s_append_sig(input, mac, mac_len);
}

static char *s_hs256(const char *hdr, const char *payload, const void *key, size_t key_len)
{
    return s_hmac(EVP_sha256(), hdr, payload, key, key_len);
}

static char *s_rs256(const char *hdr, const char *payload, EVP_PKEY *priv)
{
    char *input = s_signing_input(hdr, payload);
    unsigned char sig[1024];
    size_t sig_len = sizeof sig;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, priv) == 1 &&
             EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)input, strlen(input)) == 1;
    EVP_MD_CTX_free(ctx);
    CHECK(ok);
    return s_append_sig(input, sig, ok ? sig_len : 0);
}

/* "b64(hdr).b64(payload).sig" with sig given literally. */
static char *s_raw(const char *hdr, const char *payload, const char *sig)
{
    char *input = s_signing_input(hdr, payload);
    char *out = malloc(strlen(input) + strlen(sig) + 2);
    sprintf(out, "%s.%s", input, sig);
    free(input);
    return out;
}

static EVP_PKEY *s_rsa_key(unsigned bits)
{
    EVP_PKEY *k = EVP_RSA_gen(bits);
    CHECK(k != NULL);
    return k;
}

static char *s_public_pem(EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    CHECK(PEM_write_bio_PUBKEY(bio, k) == 1);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

static char *s_private_pem(EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    CHECK(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) == 1);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

/* Formats into one of a few rotating static buffers. */
__attribute__((format(printf, 1, 2))) static const char *s_fmt(const char *fmt, ...)
{
    static char bufs[4][16384];
    static int next;
    char *b = bufs[next++ % 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof bufs[0], fmt, ap);
    va_end(ap);
    return b;
}

static long long s_now(void)
{
    return (long long)time(NULL);
}

/* Verifies tok and checks the invariants that hold for every outcome: out
 * zeroed on failure, a message on failure, never the token or secret in it. */
static token_reason_t s_verify_len(const token_verifier_t *v, const char *tok, size_t len,
                                   token_claims_t *c)
{
    err_t e = {0};
    token_claims_t local;
    if (!c)
        c = &local;
    token_reason_t r = token_verify(v, tok, len, c, &e);
    if (r != TOKEN_OK) {
        CHECK(e.msg[0] != '\0');
        CHECK(e.code < 0);
        CHECK(c->sub[0] == '\0' && c->exp == 0 && !c->is_admin);
        if (tok && len > 0 && len < sizeof e.msg) {
            char *copy = strndup(tok, len);
            CHECK(strstr(e.msg, copy) == NULL);
            free(copy);
        }
        CHECK(strstr(e.msg, SECRET) == NULL);
        CHECK(strstr(e.msg, "PUBLIC KEY") == NULL);
        CHECK(strncmp(e.msg, "cannot verify token: ", 21) == 0);
    }
    return r;
}

static token_reason_t s_verify(const token_verifier_t *v, const char *tok, token_claims_t *c)
{
    return s_verify_len(v, tok, tok ? strlen(tok) : 0, c);
}

/* Signs payload with SECRET (HS256) and verifies it; frees the token. */
static token_reason_t s_hs_check(const token_verifier_t *v, const char *payload,
                                 token_claims_t *c)
{
    char *tok = s_hs256(HS256_HDR, payload, SECRET, strlen(SECRET));
    token_reason_t r = s_verify(v, tok, c);
    free(tok);
    return r;
}

static token_verifier_t *s_hs_verifier(int leeway)
{
    err_t e = {0};
    token_verifier_t *v = token_verifier_new_hs256(SECRET, strlen(SECRET), NULL, NULL, leeway, &e);
    CHECK(v != NULL);
    return v;
}

/* ---- HS256 ------------------------------------------------------------- */

TEST(token_hs256_good)
{
    token_verifier_t *v = s_hs_verifier(0);
    long long now = s_now();
    token_claims_t c;
    const char *p = s_fmt("{\"sub\":\"alice\",\"iat\":%lld,\"exp\":%lld}", now, now + 600);
    CHECK_INT(s_hs_check(v, p, &c), TOKEN_OK);
    CHECK_STR(c.sub, "alice");
    CHECK_STR(c.role, "user");
    CHECK_INT(c.is_admin, 0);
    CHECK_INT(c.exp, now + 600);
    CHECK_INT(c.iat, now);

    /* No typ header and no iat are fine too. */
    char *tok = s_hs256("{\"alg\":\"HS256\"}", s_fmt("{\"sub\":\"bob\",\"exp\":%lld}", now + 60),
                        SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, tok, &c), TOKEN_OK);
    CHECK_STR(c.sub, "bob");
    CHECK_INT(c.iat, 0);

    /* The token need not be NUL-terminated: exact-size copy (ASan checks). */
    size_t n = strlen(tok);
    char *exact = malloc(n);
    memcpy(exact, tok, n);
    CHECK_INT(s_verify_len(v, exact, n, &c), TOKEN_OK);
    /* ...and len is honoured: one byte short breaks the signature. */
    CHECK_INT(s_verify_len(v, exact, n - 1, &c), TOKEN_BAD_SIGNATURE);
    free(exact);
    free(tok);
    token_verifier_destroy(&v);
    CHECK(v == NULL);
    token_verifier_destroy(&v); /* NULL-safe */
    token_verifier_destroy(NULL);
}

TEST(token_hs256_expired)
{
    long long now = s_now();
    token_verifier_t *strict = s_hs_verifier(0), *lenient = s_hs_verifier(60);
    const char *long_ago = s_fmt("{\"sub\":\"a\",\"exp\":%lld}", now - 120);
    const char *just_now = s_fmt("{\"sub\":\"a\",\"exp\":%lld}", now - 30);
    const char *this_second = s_fmt("{\"sub\":\"a\",\"exp\":%lld}", now);
    CHECK_INT(s_hs_check(strict, long_ago, NULL), TOKEN_EXPIRED);
    CHECK_INT(s_hs_check(lenient, long_ago, NULL), TOKEN_EXPIRED);
    CHECK_INT(s_hs_check(strict, just_now, NULL), TOKEN_EXPIRED);
    CHECK_INT(s_hs_check(lenient, just_now, NULL), TOKEN_OK);
    CHECK_INT(s_hs_check(strict, this_second, NULL), TOKEN_EXPIRED); /* exp is exclusive */
    CHECK_INT(s_hs_check(strict, "{\"sub\":\"a\",\"exp\":0}", NULL), TOKEN_EXPIRED);
    CHECK_INT(s_hs_check(strict, "{\"sub\":\"a\",\"exp\":-9223372036854775808}", NULL),
              TOKEN_EXPIRED);
    token_verifier_destroy(&strict);
    token_verifier_destroy(&lenient);
}

TEST(token_hs256_nbf)
{
    long long now = s_now();
    token_verifier_t *strict = s_hs_verifier(0), *lenient = s_hs_verifier(60);
    const char *later = s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", now + 900, now + 600);
    const char *soon = s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", now + 900, now + 30);
    const char *past = s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", now + 900, now - 10);
    CHECK_INT(s_hs_check(strict, later, NULL), TOKEN_NOT_YET_VALID);
    CHECK_INT(s_hs_check(lenient, later, NULL), TOKEN_NOT_YET_VALID);
    CHECK_INT(s_hs_check(strict, soon, NULL), TOKEN_NOT_YET_VALID);
    CHECK_INT(s_hs_check(lenient, soon, NULL), TOKEN_OK);
    CHECK_INT(s_hs_check(strict, past, NULL), TOKEN_OK);
    CHECK_INT(s_hs_check(strict, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":\"0\"}", now + 900),
                         NULL),
              TOKEN_BAD_CLAIMS);
    token_verifier_destroy(&strict);
    token_verifier_destroy(&lenient);
}

TEST(token_exp_required)
{
    long long now = s_now();
    token_verifier_t *v = s_hs_verifier(0);
    CHECK_INT(s_hs_check(v, "{\"sub\":\"a\"}", NULL), TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, "{\"sub\":\"a\",\"exp\":null}", NULL), TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":\"%lld\"}", now + 600), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld.5}", now + 600), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, "{\"sub\":\"a\",\"exp\":1e300}", NULL), TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iat\":\"x\"}", now + 600),
                         NULL),
              TOKEN_BAD_CLAIMS);
    /* Larger than int64: jansson refuses to parse it. */
    CHECK_INT(s_hs_check(v, "{\"sub\":\"a\",\"exp\":99999999999999999999999}", NULL),
              TOKEN_MALFORMED);
    token_verifier_destroy(&v);
}

TEST(token_hs256_wrong_signature)
{
    long long now = s_now();
    token_verifier_t *v = s_hs_verifier(0);
    const char *p = s_fmt("{\"sub\":\"a\",\"exp\":%lld}", now + 600);
    const char *other = "another-secret-another-secret-xx";
    char *tok = s_hs256(HS256_HDR, p, other, strlen(other));
    CHECK_INT(s_verify(v, tok, NULL), TOKEN_BAD_SIGNATURE);
    free(tok);

    /* A good signature moved onto a different payload. */
    char *good = s_hs256(HS256_HDR, p, SECRET, strlen(SECRET));
    char *evil = s_raw(HS256_HDR, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"role\":\"admin\"}", now + 600),
                       strrchr(good, '.') + 1);
    CHECK_INT(s_verify(v, evil, NULL), TOKEN_BAD_SIGNATURE);
    /* The same signature with a flipped last character, and with padding. */
    char *flipped = strdup(good);
    char *last = flipped + strlen(flipped) - 1;
    *last = *last == 'A' ? 'B' : 'A';
    CHECK_INT(s_verify(v, flipped, NULL), TOKEN_BAD_SIGNATURE);
    char *padded = malloc(strlen(good) + 2);
    sprintf(padded, "%s=", good);
    CHECK_INT(s_verify(v, padded, NULL), TOKEN_MALFORMED);
    /* Signed with a secret that merely starts like ours. */
    char *prefix = s_hs256(HS256_HDR, p, SECRET, 16);
    CHECK_INT(s_verify(v, prefix, NULL), TOKEN_BAD_SIGNATURE);
    free(prefix);
    free(padded);
    free(flipped);
    free(evil);
    free(good);
    token_verifier_destroy(&v);
}

/* libjwt 1.10.2 rejects this one itself when given a key, but accepts it
 * when the key is NULL or its length 0: the verifier must never get there. */
TEST(token_hs256_empty_signature)
{
    long long now = s_now();
    token_verifier_t *v = s_hs_verifier(0);
    char *tok = s_raw(HS256_HDR, s_fmt("{\"sub\":\"a\",\"exp\":%lld}", now + 600), "");
    CHECK_INT(s_verify(v, tok, NULL), TOKEN_BAD_SIGNATURE);
    free(tok);
    token_verifier_destroy(&v);
}

TEST(token_alg_none)
{
    long long now = s_now();
    token_verifier_t *v = s_hs_verifier(0);
    const char *p = s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"role\":\"admin\"}", now + 600);
    const char *hdrs[] = {"{\"alg\":\"none\"}", "{\"alg\":\"none\",\"typ\":\"JWT\"}",
                          "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}"};
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        char *empty = s_raw(hdrs[i], p, "");
        CHECK_INT(s_verify(v, empty, NULL), TOKEN_BAD_ALG);
        free(empty);
        char *junk = s_raw(hdrs[i], p, "c2lnbmF0dXJl");
        CHECK_INT(s_verify(v, junk, NULL), TOKEN_BAD_ALG);
        free(junk);
        /* Even with a real HMAC made with our secret. */
        char *signed_none = s_hs256(hdrs[i], p, SECRET, strlen(SECRET));
        CHECK_INT(s_verify(v, signed_none, NULL), TOKEN_BAD_ALG);
        free(signed_none);
    }
    token_verifier_destroy(&v);
}

TEST(token_alg_pinned)
{
    long long now = s_now();
    token_verifier_t *v = s_hs_verifier(0);
    const char *p = s_fmt("{\"sub\":\"a\",\"exp\":%lld}", now + 600);
    char *t;
    /* Correctly signed with our secret, but not the pinned algorithm. */
    t = s_hmac(EVP_sha384(), "{\"alg\":\"HS384\",\"typ\":\"JWT\"}", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_ALG);
    free(t);
    t = s_hmac(EVP_sha512(), "{\"alg\":\"HS512\"}", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_ALG);
    free(t);
    /* libjwt compares alg case-insensitively; we don't. */
    t = s_hs256("{\"alg\":\"hs256\"}", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_ALG);
    free(t);
    /* alg missing, not a string, or duplicated with a second value. */
    t = s_hs256("{\"typ\":\"JWT\"}", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_ALG);
    free(t);
    t = s_hs256("{\"alg\":[\"HS256\"]}", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_ALG);
    free(t);
    t = s_hs256("{\"alg\":\"HS256\",\"alg\":\"none\"}", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    /* typ other than JWT, and crit extensions. */
    t = s_hs256("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    t = s_hs256("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", p, SECRET,
                strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    /* An RS256 token presented to the HS256 verifier. */
    EVP_PKEY *k = s_rsa_key(2048);
    t = s_rs256(RS256_HDR, p, k);
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_ALG);
    free(t);
    EVP_PKEY_free(k);
    token_verifier_destroy(&v);
}

/* ---- RS256 ------------------------------------------------------------- */

TEST(token_rs256)
{
    long long now = s_now();
    EVP_PKEY *key = s_rsa_key(2048), *other = s_rsa_key(2048);
    char *pem = s_public_pem(key);
    err_t e = {0};
    token_verifier_t *v = token_verifier_new_rs256(pem, strlen(pem), "idp", "sked", 0, &e);
    CHECK(v != NULL);
    const char *p = s_fmt("{\"sub\":\"carol\",\"exp\":%lld,\"iss\":\"idp\",\"aud\":\"sked\","
                          "\"roles\":[\"admin\"]}",
                          now + 600);
    token_claims_t c;
    char *t = s_rs256(RS256_HDR, p, key);
    CHECK_INT(s_verify(v, t, &c), TOKEN_OK);
    CHECK_STR(c.sub, "carol");
    CHECK_STR(c.role, "admin");
    CHECK_INT(c.is_admin, 1);
    free(t);

    t = s_rs256(RS256_HDR, p, other); /* another key pair */
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_SIGNATURE);
    free(t);
    t = s_raw(RS256_HDR, p, "");
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_SIGNATURE);
    free(t);
    t = s_raw("{\"alg\":\"none\"}", p, "");
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_ALG);
    free(t);
    t = s_hs256(HS256_HDR, p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_ALG);
    free(t);
    token_verifier_destroy(&v);
    free(pem);
    EVP_PKEY_free(other);
    EVP_PKEY_free(key);
}

/* The classic attack: HMAC-sign with the (public) PEM as the secret and
 * say alg HS256. libjwt would verify it with the PEM it was given. */
TEST(token_rs256_alg_confusion)
{
    long long now = s_now();
    EVP_PKEY *key = s_rsa_key(2048);
    char *pem = s_public_pem(key);
    err_t e = {0};
    token_verifier_t *v = token_verifier_new_rs256(pem, strlen(pem), NULL, NULL, 0, &e);
    CHECK(v != NULL);
    const char *p = s_fmt("{\"sub\":\"mallory\",\"exp\":%lld,\"role\":\"admin\"}", now + 600);
    char *forged = s_hs256(HS256_HDR, p, pem, strlen(pem));
    CHECK_INT(s_verify(v, forged, NULL), TOKEN_BAD_ALG);
    /* With the trailing newline stripped too (some attacks need that). */
    char *forged2 = s_hs256(HS256_HDR, p, pem, strlen(pem) - 1);
    CHECK_INT(s_verify(v, forged2, NULL), TOKEN_BAD_ALG);

    /* Sanity: the forgery is well made - a verifier that took the PEM as
     * an HMAC secret would accept it. */
    token_verifier_t *naive = token_verifier_new_hs256(pem, strlen(pem), NULL, NULL, 0, &e);
    CHECK_INT(s_verify(naive, forged, NULL), TOKEN_OK);
    token_verifier_destroy(&naive);
    free(forged2);
    free(forged);
    token_verifier_destroy(&v);
    free(pem);
    EVP_PKEY_free(key);
}

TEST(token_rs256_verifier_rejects_bad_keys)
{
    err_t e = {0};
    CHECK(token_verifier_new_rs256(NULL, 0, NULL, NULL, 0, &e) == NULL);
    CHECK(token_verifier_new_rs256("garbage", 7, NULL, NULL, 0, &e) == NULL);
    CHECK_INT(e.code, ERR_INVALID);

    EVP_PKEY *small = s_rsa_key(1024);
    char *pem = s_public_pem(small);
    CHECK(token_verifier_new_rs256(pem, strlen(pem), NULL, NULL, 0, &e) == NULL);
    CHECK(strstr(e.msg, "1024 bits") != NULL);
    free(pem);
    /* A private key PEM: refused even though it contains the public key. */
    pem = s_private_pem(small);
    CHECK(token_verifier_new_rs256(pem, strlen(pem), NULL, NULL, 0, &e) == NULL);
    CHECK(strstr(e.msg, "private key") != NULL);
    free(pem);
    EVP_PKEY_free(small);

    EVP_PKEY *ec = EVP_EC_gen("P-256");
    pem = s_public_pem(ec);
    CHECK(token_verifier_new_rs256(pem, strlen(pem), NULL, NULL, 0, &e) == NULL);
    CHECK(strstr(e.msg, "not RSA") != NULL);
    free(pem);
    EVP_PKEY_free(ec);
}

/* ---- shape ------------------------------------------------------------- */

TEST(token_malformed)
{
    long long now = s_now();
    token_verifier_t *v = s_hs_verifier(0);
    CHECK_INT(s_verify(v, NULL, NULL), TOKEN_MISSING);
    CHECK_INT(s_verify(v, "", NULL), TOKEN_MISSING);
    const char *bad[] = {"garbage", "a.b", "a.b.c.d", "..", "...", "a..c", ".b.c",
                         "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "a.b.c ", "a.b.c\n", "\xff.a.b",
                         "eyJhbGciOiJIUzI1NiJ9.e30=.x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(s_verify(v, bad[i], NULL), TOKEN_MALFORMED);
    }
    const char *p = s_fmt("{\"sub\":\"a\",\"exp\":%lld}", now + 600);
    char *t;
    /* Good 3-part token plus a 4th part. */
    char *good = s_hs256(HS256_HDR, p, SECRET, strlen(SECRET));
    t = malloc(strlen(good) + 3);
    sprintf(t, "%s.x", good);
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    /* Embedded NUL inside the given length. */
    size_t n = strlen(good);
    t = malloc(n + 1);
    memcpy(t, good, n + 1);
    t[5] = '\0';
    CHECK_INT(s_verify_len(v, t, n, NULL), TOKEN_MALFORMED);
    free(t);
    /* Header not JSON, a JSON array, invalid base64 length, non-canonical. */
    t = s_hs256("not json", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    t = s_hs256("[\"HS256\"]", p, SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    t = malloc(n + 2);
    memcpy(t + 1, good, n + 1);
    t[0] = 'e'; /* header grows by one char: length % 4 == 1 */
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    CHECK_INT(s_verify(v, "e31.e30.x", NULL), TOKEN_MALFORMED); /* "{}" with stray low bits */
    /* Payload not JSON, or JSON but not an object, validly signed. */
    t = s_hs256(HS256_HDR, "not json", SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    t = s_hs256(HS256_HDR, "[1]", SECRET, strlen(SECRET));
    CHECK_INT(s_verify(v, t, NULL), TOKEN_MALFORMED);
    free(t);
    free(good);
    token_verifier_destroy(&v);
}

TEST(token_too_long)
{
    long long now = s_now();
    token_verifier_t *v = s_hs_verifier(0);
    /* A validly signed token just over the limit, and one just under. */
    char pad[7000];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    char *big = s_hs256(HS256_HDR, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"pad\":\"%s\"}", now + 600,
                                         pad),
                        SECRET, strlen(SECRET));
    CHECK(strlen(big) > TOKEN_MAX_LEN);
    CHECK_INT(s_verify(v, big, NULL), TOKEN_MALFORMED);
    free(big);
    pad[5000] = '\0';
    char *fits = s_hs256(HS256_HDR, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"pad\":\"%s\"}", now + 600,
                                          pad),
                         SECRET, strlen(SECRET));
    CHECK(strlen(fits) <= TOKEN_MAX_LEN);
    CHECK_INT(s_verify(v, fits, NULL), TOKEN_OK);
    free(fits);
    /* A megabyte of junk is refused without being read. */
    size_t huge = 1 << 20;
    char *junk = malloc(huge + 1);
    memset(junk, 'A', huge);
    junk[huge] = '\0';
    junk[10] = junk[20] = '.';
    CHECK_INT(s_verify(v, junk, NULL), TOKEN_MALFORMED);
    free(junk);
    token_verifier_destroy(&v);
}

/* ---- claims ------------------------------------------------------------ */

TEST(token_sub_rules)
{
    long long now = s_now();
    long long exp = now + 600;
    token_verifier_t *v = s_hs_verifier(0);
    token_claims_t c;
    CHECK_INT(s_hs_check(v, s_fmt("{\"exp\":%lld}", exp), NULL), TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":42,\"exp\":%lld}", exp), NULL), TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":null,\"exp\":%lld}", exp), NULL), TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":[\"a\"],\"exp\":%lld}", exp), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"\",\"exp\":%lld}", exp), NULL), TOKEN_BAD_CLAIMS);
    /* jansson refuses \u0000 in strings, so this never reaches the copy. */
    CHECK(s_hs_check(v, s_fmt("{\"sub\":\"a\\u0000b\",\"exp\":%lld}", exp), NULL) != TOKEN_OK);
    char sub[300];
    memset(sub, 'u', 255);
    sub[255] = '\0';
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"%s\",\"exp\":%lld}", sub, exp), &c), TOKEN_OK);
    CHECK_INT(strlen(c.sub), 255);
    memset(sub, 'u', 256);
    sub[256] = '\0';
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"%s\",\"exp\":%lld}", sub, exp), NULL),
              TOKEN_BAD_CLAIMS);
    /* 255 bytes of UTF-8 is fine: the limit is bytes. "é" is 2 bytes. */
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"caf\\u00e9\",\"exp\":%lld}", exp), &c), TOKEN_OK);
    CHECK_STR(c.sub, "caf\xc3\xa9");
    token_verifier_destroy(&v);
}

TEST(token_iss_aud)
{
    long long now = s_now();
    long long exp = now + 600;
    err_t e = {0};
    token_verifier_t *v =
        token_verifier_new_hs256(SECRET, strlen(SECRET), "https://idp", "sked", 0, &e);
    CHECK(v != NULL);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp\","
                                  "\"aud\":\"sked\"}", exp), NULL),
              TOKEN_OK);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp\","
                                  "\"aud\":[\"other\",\"sked\"]}", exp), NULL),
              TOKEN_OK);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp\","
                                  "\"aud\":[\"other\"]}", exp), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp\","
                                  "\"aud\":[]}", exp), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp\","
                                  "\"aud\":\"skedx\"}", exp), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp\"}", exp),
                         NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://evil\","
                                  "\"aud\":\"sked\"}", exp), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp/\","
                                  "\"aud\":\"sked\"}", exp), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"sked\"}", exp), NULL),
              TOKEN_BAD_CLAIMS);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":[\"https://idp\"],"
                                  "\"aud\":\"sked\"}", exp), NULL),
              TOKEN_BAD_CLAIMS);
    token_verifier_destroy(&v);

    /* Without issuer/audience configured, neither is looked at. */
    v = s_hs_verifier(0);
    CHECK_INT(s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"x\",\"aud\":7}", exp),
                         NULL),
              TOKEN_OK);
    token_verifier_destroy(&v);
}

TEST(token_roles)
{
    long long exp = s_now() + 600;
    token_verifier_t *v = s_hs_verifier(0);
    struct {
        const char *extra;
        token_reason_t reason;
        int admin;
    } cases[] = {
        {"", TOKEN_OK, 0},
        {",\"role\":\"admin\"", TOKEN_OK, 1},
        {",\"role\":\"user\"", TOKEN_OK, 0},
        {",\"role\":\"Admin\"", TOKEN_OK, 0},
        {",\"role\":\"superuser\"", TOKEN_OK, 0},
        {",\"role\":\"admin \"", TOKEN_OK, 0},
        {",\"roles\":[\"reader\",\"admin\"]", TOKEN_OK, 1},
        {",\"roles\":[\"user\"]", TOKEN_OK, 0},
        {",\"roles\":[]", TOKEN_OK, 0},
        {",\"roles\":[[\"admin\"],1]", TOKEN_OK, 0},
        {",\"role\":\"user\",\"roles\":[\"admin\"]", TOKEN_OK, 1},
        {",\"role\":1", TOKEN_BAD_CLAIMS, 0},
        {",\"role\":[\"admin\"]", TOKEN_BAD_CLAIMS, 0},
        {",\"roles\":\"admin\"", TOKEN_BAD_CLAIMS, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        token_claims_t c;
        token_reason_t r =
            s_hs_check(v, s_fmt("{\"sub\":\"a\",\"exp\":%lld%s}", exp, cases[i].extra), &c);
        CHECK_INT(r, cases[i].reason);
        if (r != cases[i].reason)
            printf("# case %zu: %s\n", i, cases[i].extra);
        if (r == TOKEN_OK) {
            CHECK_INT(c.is_admin, cases[i].admin);
            CHECK_STR(c.role, cases[i].admin ? "admin" : "user");
        }
    }
    token_verifier_destroy(&v);
}

/* ---- minting and lifecycle --------------------------------------------- */

TEST(token_mint_roundtrip)
{
    err_t e = {0};
    token_verifier_t *v = s_hs_verifier(0);
    token_claims_t c;
    char *t = token_mint_hs256(SECRET, strlen(SECRET), "ops@example", "admin", 3600, &e);
    CHECK(t != NULL);
    CHECK_INT(s_verify(v, t, &c), TOKEN_OK);
    CHECK_STR(c.sub, "ops@example");
    CHECK_STR(c.role, "admin");
    CHECK_INT(c.is_admin, 1);
    CHECK_INT(c.exp - c.iat, 3600);
    CHECK(c.iat >= s_now() - 5 && c.iat <= s_now());
    free(t);

    t = token_mint_hs256(SECRET, strlen(SECRET), "u1", NULL, 60, &e);
    CHECK_INT(s_verify(v, t, &c), TOKEN_OK);
    CHECK_STR(c.role, "user");
    CHECK_INT(c.is_admin, 0);
    free(t);

    /* Quotes and backslashes in sub survive JSON encoding. */
    t = token_mint_hs256(SECRET, strlen(SECRET), "a\"b\\c", "user", 60, &e);
    CHECK_INT(s_verify(v, t, &c), TOKEN_OK);
    CHECK_STR(c.sub, "a\"b\\c");
    free(t);

    /* Minted with another secret: rejected. */
    t = token_mint_hs256("some-other-secret", 17, "u1", "admin", 60, &e);
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_SIGNATURE);
    free(t);

    char long_sub[300];
    memset(long_sub, 's', 256);
    long_sub[256] = '\0';
    CHECK(token_mint_hs256(SECRET, strlen(SECRET), long_sub, "user", 60, &e) == NULL);
    CHECK_INT(e.code, ERR_INVALID);
    CHECK(token_mint_hs256(SECRET, strlen(SECRET), "", "user", 60, &e) == NULL);
    CHECK(token_mint_hs256(SECRET, strlen(SECRET), "a", "root", 60, &e) == NULL);
    CHECK(token_mint_hs256(SECRET, strlen(SECRET), "a", "user", 0, &e) == NULL);
    CHECK(token_mint_hs256(SECRET, strlen(SECRET), "a", "user", -5, &e) == NULL);
    CHECK(token_mint_hs256(SECRET, strlen(SECRET), "a", "user", INT64_MAX, &e) == NULL);
    CHECK(token_mint_hs256(SECRET, 0, "a", "user", 60, &e) == NULL);
    CHECK(token_mint_hs256(SECRET, strlen(SECRET), "\xff\xfe", "user", 60, &e) == NULL);
    token_verifier_destroy(&v);
}

TEST(token_verifier_new_rejects)
{
    err_t e = {0};
    CHECK(token_verifier_new_hs256(NULL, 0, NULL, NULL, 0, &e) == NULL);
    CHECK(token_verifier_new_hs256(SECRET, 0, NULL, NULL, 0, &e) == NULL);
    CHECK_INT(e.code, ERR_INVALID);
    CHECK(strstr(e.msg, "secret is empty") != NULL);
    CHECK(token_verifier_new_hs256(SECRET, strlen(SECRET), NULL, NULL, -1, &e) == NULL);
    CHECK(token_verifier_new_hs256(SECRET, strlen(SECRET), "", NULL, 0, &e) == NULL);
    CHECK(token_verifier_new_hs256(SECRET, strlen(SECRET), NULL, "", 0, &e) == NULL);
    /* A short secret is allowed (documented as not recommended). */
    token_verifier_t *v = token_verifier_new_hs256("k", 1, NULL, NULL, 0, &e);
    CHECK(v != NULL);
    char *t = token_mint_hs256("k", 1, "a", "user", 60, &e);
    CHECK_INT(s_verify(v, t, NULL), TOKEN_OK);
    free(t);
    token_verifier_destroy(&v);
    /* A secret with NUL bytes is used in full, not up to the first NUL. */
    v = token_verifier_new_hs256("ab\0cd", 5, NULL, NULL, 0, &e);
    t = token_mint_hs256("ab", 2, "a", "user", 60, &e);
    CHECK_INT(s_verify(v, t, NULL), TOKEN_BAD_SIGNATURE);
    free(t);
    t = token_mint_hs256("ab\0cd", 5, "a", "user", 60, &e);
    CHECK_INT(s_verify(v, t, NULL), TOKEN_OK);
    free(t);
    token_verifier_destroy(&v);
}

TEST(token_reason_names)
{
    CHECK_STR(token_reason_name(TOKEN_OK), "ok");
    CHECK_STR(token_reason_name(TOKEN_MISSING), "missing");
    CHECK_STR(token_reason_name(TOKEN_MALFORMED), "malformed");
    CHECK_STR(token_reason_name(TOKEN_BAD_ALG), "bad_alg");
    CHECK_STR(token_reason_name(TOKEN_BAD_SIGNATURE), "bad_signature");
    CHECK_STR(token_reason_name(TOKEN_EXPIRED), "expired");
    CHECK_STR(token_reason_name(TOKEN_NOT_YET_VALID), "not_yet_valid");
    CHECK_STR(token_reason_name(TOKEN_BAD_CLAIMS), "bad_claims");
    CHECK_STR(token_reason_name((token_reason_t)99), "unknown");
}

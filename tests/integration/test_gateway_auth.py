"""Token verification as configured: RS256 with SKED_JWT_PUBLIC_KEY_FILE,
issuer and audience with SKED_JWT_ISSUER / SKED_JWT_AUDIENCE (for either
algorithm), leeway with SKED_JWT_LEEWAY; every rejected token is a 401
with WWW-Authenticate and no detail about the key."""
import base64
import hashlib
import hmac
import json
import os
import time

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import BIN, Proc, wait_port

ISS = "https://idp.example"
AUD = "sked-api"


def start_gateway(cluster, **env):
    cluster.gateway = Proc("gateway", [os.path.join(BIN, "sked-gateway")],
                           cluster.env(SKED_NODE_ID="gateway-1", **env), cluster.logdir)
    wait_port(cluster.http_port)
    return cluster


def rsa_key(bits=2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def status(cluster, token, path="/triggers/"):
    h = {"Authorization": f"Bearer {token}"} if token is not None else {}
    r = requests.get(f"{cluster.url}/api/scheduler{path}", headers=h, timeout=10)
    if r.status_code == 401:
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert "BEGIN" not in r.text
    return r.status_code


def test_rs256_token_matrix(cluster, tmp_path):
    key, other = rsa_key(), rsa_key()
    pem = public_pem(key)
    (tmp_path / "jwt.pub").write_bytes(pem)
    start_gateway(cluster, SKED_JWT_PUBLIC_KEY_FILE=tmp_path / "jwt.pub", SKED_JWT_ISSUER=ISS,
                  SKED_JWT_AUDIENCE=AUD, SKED_JWT_LEEWAY=5)
    now = int(time.time())
    good = {"sub": "alice", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 300}

    def rs(claims=None, k=key, alg="RS256", **kw):
        return jwt.encode({**good, **(claims or {})}, k, algorithm=alg, **kw)

    assert status(cluster, rs()) == 200
    assert status(cluster, rs({"aud": ["other", AUD]})) == 200               # aud array
    assert status(cluster, rs({"nbf": now + 3})) == 200                      # within leeway
    assert status(cluster, rs({"exp": now - 2})) == 200                      # within leeway
    assert status(cluster, None) == 401
    assert status(cluster, rs({"exp": now - 60})) == 401                     # expired
    assert status(cluster, rs({"nbf": now + 60})) == 401                     # not yet valid
    assert status(cluster, rs({"iss": "https://evil.example"})) == 401       # wrong issuer
    assert status(cluster, rs({"aud": "another-api"})) == 401                # wrong audience
    no_aud = dict(good)
    del no_aud["aud"]
    assert status(cluster, jwt.encode(no_aud, key, algorithm="RS256")) == 401
    no_exp = dict(good)
    del no_exp["exp"]
    assert status(cluster, jwt.encode(no_exp, key, algorithm="RS256")) == 401
    assert status(cluster, rs(k=other)) == 401                               # another key
    assert status(cluster, rs(alg="RS512")) == 401                           # algorithm pinned
    assert status(cluster, cluster.token()) == 401                           # HS256 refused
    # Algorithm confusion: HS256 keyed with the RSA public key's PEM.
    h = b64({"alg": "HS256", "typ": "JWT"})
    p = b64(good)
    sig = base64.urlsafe_b64encode(hmac.new(pem, f"{h}.{p}".encode(), hashlib.sha256).digest())
    assert status(cluster, f"{h}.{p}.{sig.rstrip(b'=').decode()}") == 401
    # alg none, unsigned.
    assert status(cluster, b64({"alg": "none", "typ": "JWT"}) + "." + b64(good) + ".") == 401
    # Tampered payload: a valid signature over other claims.
    head, _, sig = rs().split(".")
    assert status(cluster, f"{head}.{b64(dict(good, sub='root', role='admin'))}.{sig}") == 401
    # Roles come from the token: "roles" containing admin sees everyone's.
    cluster.api("POST", "/triggers/", headers={"Authorization": f"Bearer {rs({'sub': 'bob'})}"},
                json={"name": "b", "trigger_config": {"interval": 60},
                      "execution_config": {"task_type": "noop"}})
    admin = rs({"sub": "root", "roles": ["viewer", "admin"]})
    r = requests.get(f"{cluster.url}/api/scheduler/triggers/",
                     headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert r.json()["total"] == 1
    r = requests.get(f"{cluster.url}/api/scheduler/triggers/",
                     headers={"Authorization": f"Bearer {rs()}"}, timeout=10)
    assert r.json()["total"] == 0


def test_hs256_checks_issuer_and_audience_when_configured(cluster):
    start_gateway(cluster, SKED_JWT_ISSUER=ISS, SKED_JWT_AUDIENCE=AUD)
    assert status(cluster, cluster.token(iss=ISS, aud=AUD)) == 200
    assert status(cluster, cluster.token()) == 401
    assert status(cluster, cluster.token(iss=ISS)) == 401
    assert status(cluster, cluster.token(iss=ISS, aud="x")) == 401
    assert status(cluster, cluster.token(iss=ISS, aud=AUD, nbf=int(time.time()) + 20)) == 200  # 30 s leeway


def test_bad_key_configuration_stops_the_gateway(cluster, tmp_path):
    cases = {
        "missing": None,
        "private": rsa_key().private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()),
        "short": public_pem(rsa_key(1024)),
        "garbage": b"not a key\n",
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.pem"
        if content is not None:
            path.write_bytes(content)
        p = Proc(f"gateway-{name}", [os.path.join(BIN, "sked-gateway")],
                 cluster.env(SKED_JWT_PUBLIC_KEY_FILE=path), cluster.logdir)
        assert p.popen.wait(timeout=30) != 0, name
        p.log.close()
        assert "cannot start" in p.text(), name
    # Neither a secret nor a key: refused too.
    env = cluster.env()
    del env["SKED_JWT_SECRET"]
    p = Proc("gateway-nokey", [os.path.join(BIN, "sked-gateway")], env, cluster.logdir)
    assert p.popen.wait(timeout=30) != 0
    p.log.close()
    assert "SKED_JWT_PUBLIC_KEY_FILE" in p.text()


def test_rs256_key_given_inline(cluster):
    key = rsa_key()
    start_gateway(cluster, SKED_JWT_PUBLIC_KEY=public_pem(key).decode())
    now = int(time.time())
    good = jwt.encode({"sub": "alice", "exp": now + 300}, key, algorithm="RS256")
    assert status(cluster, good) == 200
    assert status(cluster, jwt.encode({"sub": "alice", "exp": now + 300}, cluster.secret,
                                      algorithm="HS256")) == 401

"""ZeroMQ input from outside: broken frames are dropped and counted,
never crash a master, and scheduling goes on."""
import os
import time

import zmq

from conftest import wait_for


def test_master_survives_malformed_frames(cluster):
    cluster.start(masters=1, workers=1)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{cluster.master_ports[0]}")
    junk = [
        [b"hello"],
        [b"SKED1", b"JOB"],
        [b"SKED9", b"HELLO", b"{}"],
        [b"SKED1", b"NOPE", b"{}"],
        [b"SKED1", b"HELLO", b"{not json"],
        [b"SKED1", b"HELLO", b'{"node_id": 5}'],
        [b"SKED1", b"FINISHED", b'{"node_id":"x","job_id":"j","attempt":1,"at":1,"status":"??"}'],
        [b"SKED1", b"STARTED", b'{"node_id":"x","job_id":"nope@1","attempt":1,"at":1}'],
        [b"SKED1", b"HELLO", os.urandom(300000)],
        [os.urandom(64) for _ in range(5)],
    ]
    for frames in junk * 20:
        s.send_multipart(frames)
    time.sleep(0.5)
    s.close()
    ctx.term()
    assert cluster.masters[0].alive()
    assert "malformed message dropped" in cluster.masters[0].text()
    r = cluster.api("POST", "/triggers/", json={
        "name": "after-junk", "trigger_config": {"interval": 1, "unit": "seconds"},
        "execution_config": {"task_type": "noop"}})
    tid = r.json()["id"]
    wait_for(lambda: any(j["status"] == "succeeded" for j in
                         cluster.api("GET", f"/triggers/{tid}/history").json()["items"]),
             timeout=10, what="a job after the junk")

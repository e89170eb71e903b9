"""Sinks (issue 18, part 2) against real receivers: a webhook receiver that verifies signatures, a
real MQTT broker (mosquitto), a directory; messages queued by the real queue and stream registry on
a real Redis, delivered by the real publisher. At least once, in order, signed; retried while the
receiver is away; dead-lettered when it refuses; live messages dropped and counted over the backlog.
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from services.settings import Settings
from services.sinks import SinkError, check_sink_urls
from services.sinks.files import FILE_NAME, FileSink
from services.sinks.publisher import SinkPublisher
from services.sinks.webhook import sign, verify
from services.store.jobs import JobSpec
from services.store.outbox import Outboxes, sink_id
from services.store.queue import JobQueue
from services.store.streams import StreamRegistry
from support.receivers import Mosquitto, WebhookReceiver, received

SECRET = "test-secret-0123456789abcdef"


@pytest.fixture
def settings():
    return Settings(lease_s=5, max_attempts=3, result_ttl_s=3600, sink_secret=SECRET, sink_retry_s=3600)


@pytest.fixture
def queue(redis_server_url, settings):
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    return JobQueue(client, settings)


def _run_job(queue: JobQueue, sinks: list[str], segments: int = 3) -> str:
    job_id, _ = queue.submit(JobSpec(source="/videos/a.mp4", sinks=sinks))
    [claim] = queue.claim(count=1, block_ms=100, consumer="w1")
    queue.set_total(job_id, segments)
    for i in range(segments):
        queue.store_segment(claim, i, json.dumps({"index": i, "labels": ["a"], "scores": [1.0], "embedding_b64": "AACAPw=="}))
    assert queue.complete(claim)
    return job_id


def _wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value


def test_signatures_verify_and_a_tampered_body_or_old_signature_does_not():
    body = b'{"messages": []}'
    header = sign(SECRET, body)
    assert verify(SECRET, header, body)
    assert not verify(SECRET, header, body.replace(b"[]", b"[1]"))  # tampered
    assert not verify("another-secret", header, body)
    assert not verify(SECRET, sign(SECRET, body, t=int(time.time()) - 3600), body)  # replayed an hour later
    assert not verify(SECRET, "v1=deadbeef", body)


def test_a_jobs_segments_and_end_reach_a_webhook_signed_in_order_without_embeddings(queue, settings):
    with WebhookReceiver(SECRET) as hook:
        job_id = _run_job(queue, [hook.url])
        publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
        try:
            _wait(lambda: len(hook.messages) == 4, 30, f"not delivered: {hook.messages}")
        finally:
            publisher.stop()
        assert [(m["type"], m.get("index")) for m in hook.messages] == [("segment", 0), ("segment", 1),
                                                                        ("segment", 2), ("job", None)]
        assert all(m["job_id"] == job_id for m in hook.messages) and hook.messages[-1]["state"] == "done"
        assert not any(k.startswith("embedding") for k in hook.messages[0]["segment"]) and hook.rejected == 0
        status = queue.outboxes.status(sink_id(hook.url))
        assert (status["delivered"], status["backlog"], status["last_error"]) == (4, 0, "")


def test_a_receiver_away_for_a_while_gets_everything_when_it_is_back(queue, settings):
    hook = WebhookReceiver(SECRET)  # not up yet: connections refused
    _run_job(queue, [hook.url])
    publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
    try:
        status = _wait(lambda: (s := queue.outboxes.status(sink_id(hook.url)))["retrying_since"] and s, 30,
                       "the failure is not shown")
        assert "cannot reach" in status["last_error"] and status["backlog"] == 4
        _run_job(queue, [hook.url])  # more while it is away
        hook.up()
        _wait(lambda: len(hook.messages) == 8, 90, "not delivered after the receiver came back")
        _wait(lambda: not queue.outboxes.status(sink_id(hook.url))["retrying_since"], 10, "still shown failing")
    finally:
        publisher.stop()
        hook.down()
    assert len(set(hook.keys())) == 8


def test_a_refusing_receiver_dead_letters_the_batch_which_replays(queue, settings):
    with WebhookReceiver(SECRET) as hook:
        hook.status = 422  # a 4xx other than 408/429: not tried again
        _run_job(queue, [hook.url], segments=2)
        publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
        try:
            [entry] = _wait(queue.outboxes.dead_letters, 30, "not dead-lettered")
            assert "HTTP 422" in entry["reason"] and len(entry["messages"]) == 3
            assert hook.messages == [] and queue.outboxes.backlog(sink_id(hook.url)) == 0
            hook.status = 200
            assert queue.outboxes.replay(entry["id"]) == 3
            _wait(lambda: len(hook.messages) == 3, 30, "the replayed batch was not delivered")
            assert queue.outboxes.dead_letters() == []
        finally:
            publisher.stop()


def test_a_wrong_secret_is_refused_by_the_receiver(queue, settings):
    with WebhookReceiver("the receiver's secret") as hook:
        _run_job(queue, [hook.url], segments=1)
        publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
        try:
            _wait(queue.outboxes.dead_letters, 30, "not dead-lettered")
        finally:
            publisher.stop()
        assert hook.rejected >= 1 and hook.messages == []


def test_global_sinks_get_every_job_and_a_file_sink_appends_json_lines(queue, settings, tmp_path):
    directory = tmp_path / "out"
    url = f"file://{directory}"
    queue.outboxes.set_global([url])
    first, second = _run_job(queue, []), _run_job(queue, [], segments=2)
    publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
    try:
        _wait(lambda: (directory / FILE_NAME).exists() and
              len((directory / FILE_NAME).read_text().splitlines()) == 7, 30, "not written")
    finally:
        publisher.stop()
    lines = [json.loads(line) for line in (directory / FILE_NAME).read_text().splitlines()]
    assert [(m["job_id"], m["type"]) for m in lines] == [(first, "segment")] * 3 + [(first, "job")] + [
        (second, "segment")] * 2 + [(second, "job")]


def test_the_file_sink_rotates(tmp_path, monkeypatch, settings):
    monkeypatch.setattr("services.sinks.files.ROTATE_BYTES", 200)
    sink = FileSink(f"file://{tmp_path}", settings)
    for i in range(30):
        sink.send([{"type": "segment", "job_id": "j", "index": i, "segment": {}}])
    rotated = sorted(p.name for p in tmp_path.iterdir())
    assert rotated == [FILE_NAME, *(f"{FILE_NAME}.{n}" for n in range(1, 6))]  # five kept, the oldest deleted
    last = json.loads((tmp_path / FILE_NAME).read_text().splitlines()[-1])
    assert last["index"] == 29


def test_a_stream_over_its_sinks_backlog_drops_live_messages_and_counts_them(queue):
    registry = StreamRegistry(queue.r)
    url = "https://receiver.example/hook"
    sid = queue.outboxes.register([url])[0]
    registry.acquire("cam", "w1", 10)
    for i in range(5):
        assert registry.publish("cam", "w1", {"stream": "cam", "index": i},
                                [{"event": "enter", "label": "x", "index": i}], [sid], backlog=4)
    assert queue.outboxes.backlog(sid) == 4  # window 0 and its event, window 1 and its event; then dropped
    assert queue.outboxes.status(sid)["dropped"] == 6
    messages = [m for _, m in queue.outboxes.peek(sid, 10)]
    assert [(m["type"], m["index"]) for m in messages] == [("stream.segment", 0), ("stream.event", 0),
                                                           ("stream.segment", 1), ("stream.event", 1)]


def test_bad_sink_urls_are_one_line_each(settings, tmp_path):
    (tmp_path / "a-file").write_text("")
    for url, words in [("kafka://broker:9092", "unknown sink kind 'kafka'"),
                       ("ftp://x/y", "unknown sink kind 'ftp'"),
                       ("http://169.254.169.254/latest", "link-local or metadata"),
                       ("mqtt://u:pw@:1883", "has no host"),
                       ("mqtt://host:port", "mqtt://host:port/prefix"),
                       ("mqtt://host/a/#", r"may not hold \+ or #"),
                       ("file://relative/dir", "absolute directory"),
                       (f"file://{tmp_path / 'a-file'}", "is a file")]:
        with pytest.raises(SinkError, match=words) as e:
            check_sink_urls([url], settings)
        assert "\n" not in str(e.value) and "pw" not in str(e.value)
    with pytest.raises(SinkError, match="REELFLOW_SINK_SECRET"):
        check_sink_urls(["https://example.com/hook"], settings.replace(sink_secret=None), stack=True)


def test_mqtt_gets_stream_and_job_messages_on_their_topics_at_qos1(queue, settings, tmp_path):
    with Mosquitto(tmp_path, users={"reelflow": "s3cret"}) as broker:
        url = broker.url("reelflow", "s3cret", prefix="site1")
        check_sink_urls([url], settings, connect=True)
        out = broker.subscribe("site1/#", tmp_path / "sub.txt", "reelflow", "s3cret")
        job_id = _run_job(queue, [url], segments=2)
        registry = StreamRegistry(queue.r)
        registry.acquire("door", "w1", 10)
        registry.publish("door", "w1", {"stream": "door", "index": 7}, [{"event": "enter", "label": "x", "index": 7}],
                         queue.outboxes.register([url]))
        publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
        try:
            lines = _wait(lambda: len(got := received(out)) >= 5 and got, 30, "not received")
        finally:
            publisher.stop()
        assert [(topic, m["type"]) for topic, m in lines] == [
            (f"site1/jobs/{job_id}", "segment"), (f"site1/jobs/{job_id}", "segment"), (f"site1/jobs/{job_id}", "job"),
            ("site1/streams/door/segments", "stream.segment"), ("site1/streams/door/events", "stream.event")]


def test_mqtt_bad_credentials_and_no_broker_are_one_line(settings, tmp_path):
    with Mosquitto(tmp_path, users={"reelflow": "s3cret"}) as broker:
        with pytest.raises(SinkError, match="refused the connection .*check the user and password") as e:
            check_sink_urls([broker.url("reelflow", "wrong")], settings, connect=True)
        assert "wrong" not in str(e.value)
        port = broker.port
    with pytest.raises(SinkError, match="cannot reach the broker .*is it running"):
        check_sink_urls([f"mqtt://127.0.0.1:{port}"], settings, connect=True)


def test_outboxes_know_their_sinks(queue):
    outboxes = Outboxes(queue.r)
    outboxes.set_global(["file:///tmp/a"])
    outboxes.register(["https://h/x"])
    assert outboxes.targets(["https://h/x", "file:///tmp/a"]) == [sink_id("file:///tmp/a"), sink_id("https://h/x")]
    outboxes.set_global(["file:///tmp/b"])  # a stack started with other REELFLOW_SINKS
    assert outboxes.targets([]) == [sink_id("file:///tmp/b")]


def test_embeddings_reach_sinks_only_when_asked(queue, settings):
    url = "https://receiver.example/hook"
    _run_job(queue, [url], segments=1)
    with_them = JobQueue(queue.r, settings.replace(sink_embeddings=True))
    _run_job(with_them, [url], segments=1)
    first, _, second, _ = [m for _, m in queue.outboxes.peek(sink_id(url), 10)]
    assert "embedding_b64" not in first["segment"] and second["segment"]["embedding_b64"] == "AACAPw=="


def test_mqtts_checks_the_brokers_certificate(queue, settings, tmp_path):
    with Mosquitto(tmp_path, users={"reelflow": "s3cret"}, tls=True) as broker:
        url = broker.url("reelflow", "s3cret") + f"?ca={broker.ca}"
        check_sink_urls([url], settings, connect=True)
        with pytest.raises(SinkError, match="cannot reach the broker") as e:  # the system's CAs do not know it
            check_sink_urls([broker.url("reelflow", "s3cret")], settings, connect=True)
        assert "CERTIFICATE_VERIFY_FAILED" in str(e.value) or "certificate" in str(e.value)
        _run_job(queue, [url], segments=2)
        publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
        try:
            _wait(lambda: queue.outboxes.status(sink_id(url))["delivered"] == 3, 30, "not delivered over TLS")
        finally:
            publisher.stop()


def test_a_failing_sink_shows_in_streams_list_and_status(queue):
    from services.store.overview import stack_overview, stream_rows
    from services.store.streams import StreamSpec

    url = "https://receiver.example/hook?token=abc"
    registry = StreamRegistry(queue.r)
    registry.register(StreamSpec(name="door", url="rtsp://cam/1", sinks=[url]))
    queue.outboxes.failed_once(sink_id(url), "HTTP 503 Service Unavailable", time.time() - 30)
    [row] = stream_rows(registry)
    assert row["sinks"] == 1 and row["sink_error"] == "https://receiver.example/hook?token=***: HTTP 503 Service Unavailable"
    [sink] = stack_overview(queue)["sinks"]
    assert sink["retrying_since"] and sink["last_error"].startswith("HTTP 503") and "abc" not in json.dumps(sink)


def test_receivers_verify_rotated_secrets_and_reject_garbage_headers():
    body = b'{"messages": []}'
    t = int(time.time())
    both = f"t={t},v1={sign('old-secret', body, t).split('v1=')[1]},v1={sign(SECRET, body, t).split('v1=')[1]}"
    assert verify(SECRET, both, body) and verify("old-secret", both, body)
    assert not verify(SECRET, f"t={t},v1=\u00e9\u00e9", body) and not verify(SECRET, "garbage", body)


def test_basic_auth_in_a_webhook_url_a_sink_named_twice_and_an_unreadable_entry(queue, settings):
    with WebhookReceiver(SECRET) as hook:
        url = hook.url.replace("http://", "http://user:p%40ss@")
        _run_job(queue, [url, url], segments=1)  # named twice: each message once
        queue.r.xadd(f"reelflow:sink:{sink_id(url)}:outbox", {"junk": "1"})  # something else wrote here
        publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
        try:
            _wait(lambda: len(hook.messages) == 2, 30, "not delivered")
            [entry] = _wait(queue.outboxes.dead_letters, 10, "the unreadable entry was not set aside")
        finally:
            publisher.stop()
        assert [m["type"] for m in hook.messages] == ["segment", "job"]
        assert hook.authorization == "Basic dXNlcjpwQHNz"  # user:p@ss
        assert entry["reason"] == "not a reelflow message" and "p%40ss" not in json.dumps(entry)


def test_an_answer_that_is_not_http_is_a_failed_delivery_tried_again(queue, settings):
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def garbage():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            conn.close()

    thread = threading.Thread(target=garbage, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    _run_job(queue, [url], segments=1)
    publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
    try:
        status = _wait(lambda: (s := queue.outboxes.status(sink_id(url)))["retrying_since"] and s, 30, "not failing")
    finally:
        publisher.stop()
        stop.set()
        thread.join()
        server.close()
    assert "cannot reach" in status["last_error"] and status["backlog"] == 2 and queue.outboxes.dead_letters() == []


@pytest.mark.slow  # about 15-25 s: `make test` stays under 15 minutes
def test_mqtt_reconnects_when_the_broker_comes_back_and_delivers_what_waited(queue, settings, tmp_path):
    with Mosquitto(tmp_path) as broker:
        url = broker.url()
        out = broker.subscribe("reelflow/#", tmp_path / "before.txt")
        publisher = SinkPublisher(queue.outboxes, settings, "w1").start()
        try:
            first = _run_job(queue, [url], segments=1)
            _wait(lambda: len(received(out)) == 2, 30, "not received before the outage")
            broker.stop()
            second = _run_job(queue, [url], segments=2)  # while the broker is away
            failures = set()  # three tries failed: the next comes 4 s or more later, after the new subscriber
            _wait(lambda: failures.add(queue.r.hget(f"reelflow:sink:{sink_id(url)}:status", "last_error_at"))
                  or len(failures - {None}) >= 3, 60, "the outage is not shown")
            broker.start()
            out = broker.subscribe("reelflow/#", tmp_path / "after.txt")
            lines = _wait(lambda: len(got := received(out)) >= 3 and got, 90, "not delivered after the broker came back")
        finally:
            publisher.stop()
    assert [(t, m["type"]) for t, m in lines] == [(f"reelflow/jobs/{second}", "segment")] * 2 + [
        (f"reelflow/jobs/{second}", "job")] and first != second

"""``TeacherClient``'s connections (``shared.connections``) against a real uvicorn on 127.0.0.1."""

import datetime
import ipaddress
import multiprocessing
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import urllib3

from shared.client import TeacherClient
from shared.connections import ConnectionPool
from shared.errors import ConfigError, XModalError
from teacher_server.app import create_app
from teacher_server.settings import ServeSettings
from tests.servers import uvicorn_thread


def _idle(c: TeacherClient) -> list:
    """The client's idle keep-alive connections (urllib3 keeps its pool's free slots as None)."""
    return [conn for conn in c._pool.http.pool.queue if conn is not None]


def test_idle_connection_the_server_closed_is_replaced_without_a_retry(store_path, reference):
    app = create_app(ServeSettings(stores=[store_path]))
    with uvicorn_thread(app, timeout_keep_alive=0.2) as url, TeacherClient(url, backoff=5.0) as c:
        np.testing.assert_array_equal(c.get("tiny.0001"), reference["tiny.0001"])
        [idle] = _idle(c)
        port = idle.sock.getsockname()[1]
        time.sleep(0.6)  # uvicorn closes the keep-alive connection after 0.2 s idle
        assert idle.sock.recv(1, socket.MSG_PEEK) == b""  # the server's FIN is there: the pooled socket is dead
        np.testing.assert_array_equal(c.get_many(["tiny.0002", "tiny.0003"]),
                                      np.stack([reference["tiny.0002"], reference["tiny.0003"]]))
        assert c.retried == 0  # sent again at once on a new connection, not after a (5-s) backoff
        assert _local_ports(c) and _local_ports(c) != [port]  # on a socket of its own


def test_one_client_shared_by_threads(store_path, reference):
    ids = list(reference)
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path]))) as url, TeacherClient(url) as c:

        def work(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(15):
                batch = rng.sample(ids, rng.randint(1, 12))
                np.testing.assert_array_equal(c.get_many(batch), np.stack([reference[f] for f in batch]))
                fid = rng.choice(ids)
                np.testing.assert_array_equal(c.get(fid), reference[fid])

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(work, range(6)))
        assert 1 <= len(_idle(c)) <= 6  # connections were reused, one per thread at most
        assert c._pool.http.num_connections <= 6 < c._pool.http.num_requests
        assert c.retried == 0


def _answer_once_then_stall(listener: socket.socket, accepted: list[socket.socket]) -> None:
    """Answer the first request of the first connection with a keep-alive 200, then read and never answer."""
    conn, _ = listener.accept()
    accepted.append(conn)
    while b"\r\n\r\n" not in conn.recv(65536):
        pass
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    listener.settimeout(3)
    try:
        while True:
            accepted.append(listener.accept()[0])
    except OSError:
        pass


def test_a_server_that_stops_answering_times_out_once():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        accepted: list[socket.socket] = []
        threading.Thread(target=_answer_once_then_stall, args=(listener, accepted), daemon=True).start()
        pool = ConnectionPool(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        assert pool.request("GET", "/info").json() == {}
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            pool.request("GET", "/info")  # on the reused connection, which now stalls
        time.sleep(0.2)
        assert len(accepted) == 1  # not sent again on a new connection
        with TeacherClient(pool_url := f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3,
                           wait=0) as c, pytest.raises(XModalError, match=f"{pool_url}.*TimeoutError"):
            c.info()
        for conn in accepted:
            conn.close()


def _hang_up_then_answer(listener: socket.socket, requests: list[bytes]) -> None:
    """Read the first connection's request and close it unanswered (a server closing a keep-alive connection as
    the request arrives); answer the second connection's with a 200."""
    for n in range(2):
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            requests.append(head.split(b"\r\n\r\n")[0])  # the head (the body may come in the same read or not)
            if n:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def test_a_connection_closed_before_the_answer_is_resent_at_once_and_only_once():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        requests: list[bytes] = []
        threading.Thread(target=_hang_up_then_answer, args=(listener, requests), daemon=True).start()
        pool = ConnectionPool(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=5)
        reply = pool.request("POST", "/features/batch", b"{}", {"Content-Type": "application/json"})
        assert (reply.status, reply.data) == (200, b"ok")
        assert len(requests) == 2 and requests[0] == requests[1]  # the same request, sent twice, not more


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://127.0.0.1:8000", "http://", "http://127.0.0.1:port"])
def test_bad_service_url_is_a_config_error(url):
    with pytest.raises(ConfigError, match="teacher service URL"):
        TeacherClient(url)


def test_pool_close_closes_connections_returned_later(store_path):
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path]))) as url:
        pool = ConnectionPool(url, timeout=5.0)
        started, release = threading.Event(), threading.Event()
        original, returned = pool.http._put_conn, []

        def slow_put(conn):  # hold the request's connection until the pool is closed
            returned.append(conn)
            started.set()
            release.wait(5)
            original(conn)

        pool.http._put_conn = slow_put  # type: ignore[method-assign]
        t = threading.Thread(target=pool.request, args=("GET", "/healthz"))
        t.start()
        started.wait(5)
        pool.close()
        release.set()
        t.join(5)
        assert len(returned) == 1 and returned[0].sock is None  # returned to a closed pool: closed, not kept
        assert pool.http.pool is None


def _self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_with_the_ca_named_by_ssl_cert_file(store_path, reference, tmp_path, monkeypatch):
    cert, key = _self_signed_cert(tmp_path)
    app = create_app(ServeSettings(stores=[store_path]))
    with uvicorn_thread(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        url = url.replace("http://", "https://")
        with TeacherClient(url) as c, pytest.raises(XModalError, match=r"not trusted .*SSL_CERT_FILE"):
            c.info()  # an unknown CA is refused, not silently accepted, and at once: no retries
        assert c.retried == 0
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # OpenSSL's standard way to name a CA bundle
        with TeacherClient(url) as c:
            np.testing.assert_array_equal(c.get_many(["tiny.0004", "tiny.0007"]),
                                          np.stack([reference["tiny.0004"], reference["tiny.0007"]]))


def _local_ports(c: TeacherClient) -> list[int]:
    return [conn.sock.getsockname()[1] for conn in _idle(c)]


def _fetch_in_child(c: TeacherClient, queue) -> None:
    try:
        queue.put((c.get_many(["tiny.0005", "tiny.0006"]), _local_ports(c)))
    except BaseException as e:  # report, never hang the parent
        queue.put(e)


def test_a_forked_child_never_shares_the_parents_connections(store_path, reference):
    ctx = multiprocessing.get_context("fork")
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path]))) as url, TeacherClient(url) as c:
        c.get("tiny.0001")  # the parent now holds an idle keep-alive connection
        inherited = _local_ports(c)
        queue = ctx.Queue()
        child = ctx.Process(target=_fetch_in_child, args=(c, queue))
        child.start()
        result = queue.get(timeout=60)
        child.join(30)
        assert not isinstance(result, BaseException), result
        got, child_ports = result
        np.testing.assert_array_equal(got, np.stack([reference["tiny.0005"], reference["tiny.0006"]]))
        assert len(inherited) == len(child_ports) == 1 and child_ports != inherited  # the child's own connection
        np.testing.assert_array_equal(c.get("tiny.0002"), reference["tiny.0002"])  # the parent's still works
        assert _local_ports(c) == inherited

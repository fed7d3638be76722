"""The control socket over real AF_UNIX sockets: permissions, replies, queueing, and hostile input."""

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from engine.commands import MAX_LINE_BYTES, new_command
from engine.control import (
    MAX_CLIENTS,
    SOCKET_NAME,
    CommandServer,
    ControlClient,
    ControlError,
    control_socket_path,
    send_command,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def server(run_dir):
    with CommandServer(run_dir) as srv:
        yield srv


def raw_conn(run_dir: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(run_dir / SOCKET_NAME))
    return sock


def read_replies(sock: socket.socket, n: int) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection early"
        buf += chunk
    return [json.loads(x) for x in buf.split(b"\n")[:n]]


def wait_until(pred, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# --- the socket itself -------------------------------------------------------------------------------


def test_socket_is_owner_only_unix_socket(server, run_dir):
    st = os.stat(run_dir / SOCKET_NAME)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert server._listener.family == socket.AF_UNIX


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_nothing_listens_on_a_network_port(server):
    def tcp_inodes():
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
            if os.path.exists(table):
                for row in Path(table).read_text().splitlines()[1:]:
                    inodes.add(row.split()[9])
        return inodes

    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    assert ours, "the server's socket should be visible"
    assert not ours & tcp_inodes()


def test_umask_is_restored_after_bind(run_dir):
    before = os.umask(0o022)
    try:
        with CommandServer(run_dir):
            now = os.umask(0o022)
            assert now == 0o022
    finally:
        os.umask(before)


def test_close_removes_socket_and_stops_thread_quickly(run_dir):
    srv = CommandServer(run_dir).start()
    sock = raw_conn(run_dir)  # an open, accepted client must not hold the server up
    sock.sendall(b'{"command": "pause"}\n')
    assert read_replies(sock, 1)[0]["ok"] is True
    assert srv.running
    t0 = time.monotonic()
    srv.close()
    assert time.monotonic() - t0 < 1.0
    assert not srv.running
    assert not (run_dir / SOCKET_NAME).exists()
    assert sock.recv(10) == b""  # the client sees a clean close
    sock.close()
    srv.close()  # idempotent


def test_stale_socket_file_is_replaced(run_dir):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run_dir / SOCKET_NAME))
    stale.close()  # a crashed run leaves the file behind
    assert (run_dir / SOCKET_NAME).exists()
    with CommandServer(run_dir):
        assert send_command(run_dir, {"id": "s1", "command": "pause"})["ok"] is True


def test_live_socket_is_not_stolen(server, run_dir):
    with pytest.raises(ControlError, match="already listening"):
        CommandServer(run_dir).start()
    assert send_command(run_dir, {"command": "pause"})["ok"] is True


def test_non_socket_file_is_not_deleted(run_dir):
    (run_dir / SOCKET_NAME).write_text("precious")
    with pytest.raises(ControlError, match="not a socket"):
        CommandServer(run_dir).start()
    assert (run_dir / SOCKET_NAME).read_text() == "precious"


def test_too_long_path_raises_a_clear_control_error(run_dir):
    deep = run_dir / ("d" * 120)
    with pytest.raises(ControlError) as info:
        CommandServer(deep)
    msg = str(info.value)
    assert "control socket paths must be under 108" in msg and "--run-dir" in msg
    with pytest.raises(ControlError):
        send_command(deep, {"command": "pause"})


def test_path_at_the_limit_is_accepted(run_dir):
    room = 107 - len(os.fsencode(run_dir / "x" / SOCKET_NAME))
    deep = run_dir / ("x" * (1 + room))
    assert len(os.fsencode(control_socket_path(deep))) == 107
    deep.mkdir()
    with CommandServer(deep):
        assert send_command(deep, {"command": "stop"})["ok"] is True


# --- commands and replies ----------------------------------------------------------------------------


def test_valid_commands_are_acknowledged_and_drained_in_order(server, run_dir):
    sent = [
        {"id": "c1", "command": "germinate", "slot": "block1", "blueprint": "conv_light"},
        {"id": "c2", "command": "advance", "slot": "block1"},
        {"id": "c3", "command": "set_lr", "value": 0.01},
    ]
    with ControlClient(run_dir) as client:
        for payload in sent:
            assert client.send(payload) == {"ok": True, "id": payload["id"], "status": "received"}
        reply = client.send(new_command("pause", id="c4"))
        assert reply["id"] == "c4"
        reply = client.send('{"command": "resume"}')  # raw line, no id: the server assigns one
        assert reply["ok"] and reply["id"]
    drained = server.drain()
    assert [c.id for c in drained] == ["c1", "c2", "c3", "c4", reply["id"]]
    assert drained[0].blueprint == "conv_light"
    assert server.drain() == []


def test_several_lines_in_one_write_get_one_reply_each(server, run_dir):
    sock = raw_conn(run_dir)
    sock.sendall(b'{"id":"a","command":"pause"}\n{"id":"b","command":"resume"}\n\n')
    replies = read_replies(sock, 3)
    assert [r.get("id") for r in replies[:2]] == ["a", "b"]
    assert replies[2] == {"ok": False, "error": "malformed command: empty line"}
    sock.close()


def test_malformed_line_is_answered_and_connection_keeps_serving(server, run_dir):
    with ControlClient(run_dir) as client:
        bad = client.send("this is not json")
        assert bad["ok"] is False and "not JSON" in bad["error"]
        typo = client.send({"id": "t1", "command": "germinate", "slot": "block1", "blueprnt": "x"})
        assert typo["ok"] is False and typo["id"] == "t1" and "blueprnt: unknown field" in typo["error"]
        unknown = client.send({"command": "explode"})
        assert "valid commands:" in unknown["error"]
        assert client.send({"id": "ok1", "command": "stop"})["ok"] is True
    assert send_command(run_dir, {"id": "ok2", "command": "stop"})["ok"] is True
    assert [c.id for c in server.drain()] == ["ok1", "ok2"]


def test_binary_junk_does_not_kill_the_server(server, run_dir):
    sock = raw_conn(run_dir)
    sock.sendall(b"\x00\xff\xfe\x80garbage\n" + os.urandom(2000).replace(b"\n", b"") + b"\n")
    replies = read_replies(sock, 2)
    assert all(r["ok"] is False for r in replies)
    assert "not UTF-8" in replies[0]["error"]
    sock.sendall(b'{"id":"after","command":"pause"}\n')
    assert read_replies(sock, 1)[0]["id"] == "after"
    sock.close()
    assert server.running


@pytest.mark.parametrize("chunked", [False, True])
def test_overly_long_line_is_refused_and_connection_stays_usable(server, run_dir, chunked):
    sock = raw_conn(run_dir)
    long_line = json.dumps({"command": "cull", "slot": "s", "reason": "x" * (4 * MAX_LINE_BYTES)}).encode()
    if chunked:  # arrives in pieces, so the server sees a growing line without a newline
        for i in range(0, len(long_line), 1000):
            sock.sendall(long_line[i : i + 1000])
            time.sleep(0.002)
        sock.sendall(b"\n")
    else:
        sock.sendall(long_line + b"\n")
    sock.sendall(b'{"id":"next","command":"pause"}\n')
    replies = read_replies(sock, 2)
    assert replies[0]["ok"] is False and f"longer than {MAX_LINE_BYTES} bytes" in replies[0]["error"]
    assert replies[1] == {"ok": True, "id": "next", "status": "received"}
    sock.close()
    assert [c.id for c in server.drain()] == ["next"]


def test_client_disconnecting_mid_line_is_harmless(server, run_dir):
    sock = raw_conn(run_dir)
    sock.sendall(b'{"id":"half","command":"ger')
    sock.close()
    sock = raw_conn(run_dir)
    sock.sendall(b'{"id":"full","command":"pause"}\n')
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    assert send_command(run_dir, {"id": "x", "command": "resume"})["ok"] is True
    assert [c.id for c in server.drain()] == ["full", "x"]  # the half line never became a command
    assert server.running


def test_client_that_never_reads_is_dropped_without_harm(server, run_dir):
    sock = raw_conn(run_dir)
    junk = b"x\n" * 2_000_000  # each line earns an error reply the client never reads
    try:
        sock.sendall(junk)
    except OSError:
        pass  # the server dropped us: expected
    sock.close()
    assert send_command(run_dir, {"id": "still", "command": "pause"})["ok"] is True
    assert server.running


def test_several_concurrent_clients(server, run_dir):
    n_clients, per_client = 8, 25
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            with ControlClient(run_dir) as client:
                for i in range(per_client):
                    reply = client.send({"id": f"k{k}-{i}", "command": "advance", "slot": f"block{k}"})
                    assert reply == {"ok": True, "id": f"k{k}-{i}", "status": "received"}
        except BaseException as exc:  # noqa: BLE001 - surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    drained = server.drain()
    assert len(drained) == n_clients * per_client
    for k in range(n_clients):  # each client's commands keep their order
        mine = [c.id for c in drained if c.id.startswith(f"k{k}-")]
        assert mine == [f"k{k}-{i}" for i in range(per_client)]


def test_on_received_hook_sees_commands_and_its_errors_are_contained(run_dir):
    seen = []

    def hook(cmd):
        seen.append(cmd.id)
        raise RuntimeError("observer bug")

    with CommandServer(run_dir, on_received=hook) as srv:
        assert send_command(run_dir, {"id": "h1", "command": "pause"})["ok"] is True
        assert send_command(run_dir, {"id": "h2", "command": "resume"})["ok"] is True
        assert [c.id for c in srv.drain()] == ["h1", "h2"]
    assert seen == ["h1", "h2"]


# --- waiting -----------------------------------------------------------------------------------------


def test_wait_for_command_times_out_when_idle(server):
    t0 = time.monotonic()
    assert server.wait_for_command(0.2) is False
    assert 0.15 <= time.monotonic() - t0 < 1.0
    assert server.wait_for_command(0) is False


def test_wait_for_command_wakes_when_a_command_arrives(server, run_dir):
    threading.Timer(0.1, send_command, args=(run_dir, {"id": "w", "command": "resume"})).start()
    t0 = time.monotonic()
    assert server.wait_for_command(5.0) is True
    assert time.monotonic() - t0 < 2.0
    assert server.wait_for_command(0) is True  # waiting does not consume
    assert [c.id for c in server.drain()] == ["w"]


# --- clients -----------------------------------------------------------------------------------------


def test_send_command_to_missing_socket_says_nobody_listens(run_dir):
    with pytest.raises(ControlError) as info:
        send_command(run_dir, {"command": "pause"})
    msg = str(info.value)
    assert f"no engine is listening at {run_dir / SOCKET_NAME}" in msg
    assert "(the run has finished or was started elsewhere)" in msg


def test_send_command_after_server_closed_says_nobody_listens(run_dir):
    with CommandServer(run_dir):
        pass
    with pytest.raises(ControlError, match="no engine is listening"):
        send_command(run_dir, {"command": "pause"})


def test_send_command_times_out_on_a_silent_listener(run_dir):
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(run_dir / SOCKET_NAME))
    silent.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(ControlError, match="no reply from the engine"):
            send_command(run_dir, {"command": "pause"}, timeout=0.3)
        assert time.monotonic() - t0 < 2.0
    finally:
        silent.close()


def test_client_reconnects_after_the_engine_restarts(run_dir):
    client = ControlClient(run_dir)
    with CommandServer(run_dir):
        assert client.send({"command": "pause"})["ok"] is True
    with pytest.raises(ControlError):
        client.send({"command": "resume"})  # engine gone
    with CommandServer(run_dir) as srv:
        assert client.send({"id": "again", "command": "resume"})["ok"] is True
        assert [c.id for c in srv.drain()] == ["again"]
    client.close()


def test_client_refuses_multi_line_payloads(run_dir):
    with pytest.raises(ValueError, match="single line"):
        ControlClient(run_dir).send('{"command": "pause"}\n{"command": "stop"}')


# --- idle and slow connections -----------------------------------------------------------------------


def closed_by_server(sock: socket.socket, within: float = 5.0) -> bool:
    """Whether the server closes `sock` (EOF or reset) within a generous bound."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_silent_connections_cannot_lock_the_operator_out(run_dir):
    """A full house of silent connections (a hung script, a stuck tool) must not lock the operator out:
    the next client still gets its command answered."""
    with CommandServer(run_dir, idle_timeout=60.0) as srv:  # so long that only the slot policy can help
        silent = []
        try:
            for n in range(1, MAX_CLIENTS + 1):  # one by one: a burst would overrun the listen backlog
                silent.append(raw_conn(run_dir))
                assert wait_until(lambda: srv.connection_count == n)
            assert send_command(run_dir, {"id": "op1", "command": "pause"}) == {
                "ok": True, "id": "op1", "status": "received"}
            with ControlClient(run_dir) as client:  # ... and again, with a full house again
                assert client.send({"id": "op2", "command": "resume"})["ok"] is True
            assert [c.id for c in srv.drain()] == ["op1", "op2"]
            assert closed_by_server(silent[0])  # the longest idle made room
        finally:
            for sock in silent:
                sock.close()


def test_a_silent_connection_is_closed_after_the_idle_timeout(run_dir):
    with CommandServer(run_dir, idle_timeout=0.2):
        sock = raw_conn(run_dir)
        try:
            assert closed_by_server(sock)
        finally:
            sock.close()


def test_a_slow_connection_that_never_finishes_a_line_is_closed_too(run_dir):
    """Trickling bytes is not activity: only a complete command line restarts the idle clock."""
    with CommandServer(run_dir, idle_timeout=0.3) as srv:
        sock = raw_conn(run_dir)
        try:
            sock.sendall(b'{"id":"a","command":"pause"}\n')
            assert read_replies(sock, 1)[0]["id"] == "a"
            deadline = time.monotonic() + 5.0
            closed = False
            while time.monotonic() < deadline and not closed:
                try:
                    sock.sendall(b" ")  # one byte at a time, never a newline
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                time.sleep(0.02)
            assert closed or closed_by_server(sock, within=0.5)
        finally:
            sock.close()
        assert [c.id for c in srv.drain()] == ["a"]


def test_a_client_kept_open_survives_the_server_closing_it_when_idle(run_dir):
    """The dashboard keeps one ControlClient for the whole session: after the server closed it as idle,
    the next command still goes through (on a fresh connection), exactly once."""
    with CommandServer(run_dir, idle_timeout=0.1) as srv:
        with ControlClient(run_dir) as client:
            assert client.send({"id": "first", "command": "pause"})["ok"] is True
            assert wait_until(lambda: srv.connection_count == 0, timeout=5.0)  # closed as idle
            assert client.send({"id": "second", "command": "resume"})["ok"] is True
        assert [c.id for c in srv.drain()] == ["first", "second"]


# --- outside text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["x\x1b]0;pwned\x07", "x\x9b2J", "x\x7f", "x\u009b", "a\nb"])
def test_control_characters_in_command_strings_are_refused(server, run_dir, reason):
    """A cull reason is written to the log and shown on screens: no control character (C0, DEL, or C1 such
    as the 8-bit CSI) may get in. The operator is told why."""
    reply = send_command(run_dir, json.dumps({"id": "c1", "command": "cull", "slot": "block1", "reason": reason}))
    assert reply["ok"] is False and reply["id"] == "c1"
    assert "reason: must be printable text on one line" in reply["error"]
    assert server.drain() == []


def test_replies_never_echo_control_characters(server, run_dir):
    sock = raw_conn(run_dir)
    evil = "\x1b]0;pwned\x07\x9b2J"
    sock.sendall(json.dumps({"id": evil, "command": f"boom{evil}"}).encode() + b"\n")
    sock.sendall(json.dumps({"id": evil, "command": "pause"}).encode() + b"\n")
    raw = b""
    while raw.count(b"\n") < 2:
        raw += sock.recv(65536)
    sock.close()
    assert raw.isascii()  # JSON-escaped on the wire ...
    for reply in (json.loads(line) for line in raw.splitlines()):
        text = json.dumps(reply, ensure_ascii=False)
        assert not [ch for ch in text if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F], reply  # ... and when decoded
        assert reply["ok"] is False and reply["id"] == "\\x1b]0;pwned\\x07\\x9b2J"

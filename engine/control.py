"""The operator command channel: a server on RUN_DIR/control.sock (owner-only AF_UNIX, never TCP)
that queues parsed commands for the trainer to drain at safe points, and the clients that talk to it.

Torch-free (the dashboard imports the clients). It only parses and queues; it never applies a command.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engine.commands import MAX_LINE_BYTES, Command, CommandError, command_to_wire, parse_command

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
# A client that never reads its replies is dropped once this much is waiting for it.
_MAX_PENDING_REPLY_BYTES = 64 * 1024
# At most this many connections at once. When one more arrives, the least recently active one is
# closed to make room, so a pile of stuck clients can never lock the operator out.
MAX_CLIENTS = 32
# A connection that has not completed a command line for this long (seconds) is closed: silent or
# trickling clients cannot sit on a slot. Only a complete line restarts the clock, never a stray
# byte. Clients that send one command per connection never notice; `ControlClient` reconnects.
IDLE_TIMEOUT_S = 5.0
# How often the serving thread looks at its stop flag; bounds how long close() takes.
_POLL_S = 0.05


class ControlError(RuntimeError):
    """The control channel cannot be used: path too long, nobody listening, no reply, etc."""


def control_socket_path(run_dir: str | os.PathLike[str]) -> Path:
    """RUN_DIR/control.sock as an absolute path; `ControlError` if it is too long for AF_UNIX."""
    run = Path(os.path.abspath(run_dir))
    path = run / SOCKET_NAME
    n = len(os.fsencode(path))
    if n > MAX_SOCKET_PATH_BYTES:
        raise ControlError(
            f"run directory path is {len(os.fsencode(run))} bytes, so its control socket path would be"
            f" {n} bytes; control socket paths must be under {MAX_SOCKET_PATH_BYTES + 1};"
            " use a shorter --run-dir"
        )
    return path


class _Conn:
    """One client connection: bytes read but not yet a full line, replies not yet sent, and when it
    is closed as idle unless it completes a line first."""

    __slots__ = ("sock", "inbuf", "outbuf", "discarding", "deadline")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        # True after an over-long line: drop bytes up to the next newline, then serve again.
        self.discarding = False
        self.deadline = deadline  # time.monotonic() past which the connection is idle


class CommandServer:
    """Listens on RUN_DIR/control.sock, answers each line at once, and queues valid commands.

    `drain()` and `wait_for_command()` are for the trainer; everything else runs in one daemon
    thread multiplexing all connections with `selectors`. `on_received`, if given, is called in that
    thread for each queued command and must be quick; its exceptions are logged and ignored.

    A connection is closed once it has gone `idle_timeout` seconds without completing a line, and
    when `max_clients` are open the least recently active one makes room for a new one.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        on_received: Callable[[Command], None] | None = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT_S,
        max_clients: int = MAX_CLIENTS,
    ):
        if not idle_timeout > 0 or max_clients < 1:
            raise ValueError("idle_timeout must be positive and max_clients at least 1")
        self.path = control_socket_path(run_dir)
        self.on_received = on_received
        self.idle_timeout = float(idle_timeout)
        self.max_clients = int(max_clients)
        self._conns: dict[int, _Conn] = {}  # by file descriptor; touched only by the serving thread
        self._queue: collections.deque[Command] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> CommandServer:
        """Bind the socket (owner-only), listen, and start serving in a daemon thread."""
        if self._thread is not None:
            raise ControlError("command server already started")
        self._remove_stale_socket()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # umask is process-wide, so keep the window to the bind call itself: the socket file is
            # created 0o600 and nobody else can ever connect, even before the chmod below.
            old_umask = os.umask(0o177)
            try:
                listener.bind(os.fsencode(self.path))
            finally:
                os.umask(old_umask)
            os.chmod(self.path, 0o600)
            listener.listen(16)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise ControlError(f"cannot listen at {self.path}: {exc.strerror or exc}") from exc
        self._listener = listener
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="esper-control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the serving thread, close every connection and remove the socket file. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            try:
                # Only remove what is still a socket: never delete a file someone put there since.
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> CommandServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connection_count(self) -> int:
        """How many client connections are open now (a snapshot: the serving thread changes it)."""
        return len(self._conns)

    # --- trainer side ----------------------------------------------------------------------------

    def drain(self) -> list[Command]:
        """All queued commands in arrival order, removing them from the queue; never blocks."""
        with self._cond:
            items = list(self._queue)
            self._queue.clear()
        return items

    def has_pending(self) -> bool:
        """Whether a command is queued. Lock-free (a deque's truthiness is atomic): cheap enough for
        the trainer to ask between every two optimizer steps."""
        return bool(self._queue)

    def wait_for_command(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a queued command; True if one is queued (not consumed)."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._queue), timeout=max(0.0, timeout))

    # --- serving thread --------------------------------------------------------------------------

    def _remove_stale_socket(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(os.fsencode(self.path))
        except OSError:
            os.unlink(self.path)  # left behind by a run that died: nobody answers
            return
        finally:
            probe.close()
        raise ControlError(f"another engine is already listening at {self.path}")

    def _serve(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        conns = self._conns
        try:
            while not self._stop.is_set():
                try:
                    events = sel.select(timeout=_POLL_S)
                except OSError:  # e.g. EINTR storms; never let the loop die
                    time.sleep(_POLL_S)
                    continue
                for key, mask in events:
                    if key.data is None:
                        self._accept(sel, conns)
                        continue
                    conn: _Conn = key.data
                    try:
                        if mask & selectors.EVENT_READ:
                            self._read(conn)
                        if conn.outbuf:
                            self._flush(conn)
                        if conn.sock.fileno() != -1:
                            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
                            if key.events != want:
                                sel.modify(conn.sock, want, conn)
                    except _Drop:
                        self._drop(sel, conns, conn)
                    except Exception:  # noqa: BLE001 - one bad client must never stop the server
                        log.exception("control connection failed; dropping it")
                        self._drop(sel, conns, conn)
                self._drop_idle(sel, conns)
        finally:
            for conn in list(conns.values()):
                self._drop(sel, conns, conn)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, conns: dict[int, _Conn]) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            log.exception("accept failed on the control socket")
            return
        while len(conns) >= self.max_clients:
            # Full house: the least recently active connection makes room, so a new client (the
            # operator) always gets in; stuck ones would otherwise hold every slot until they time out.
            self._drop(sel, conns, min(conns.values(), key=lambda c: c.deadline))
        sock.setblocking(False)
        conn = _Conn(sock, time.monotonic() + self.idle_timeout)
        conns[sock.fileno()] = conn
        sel.register(sock, selectors.EVENT_READ, conn)

    def _drop_idle(self, sel: selectors.BaseSelector, conns: dict[int, _Conn]) -> None:
        now = time.monotonic()
        for conn in [c for c in conns.values() if c.deadline <= now]:
            self._drop(sel, conns, conn)

    def _drop(self, sel: selectors.BaseSelector, conns: dict[int, _Conn], conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd != -1:
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conns.pop(fd, None)
        conn.sock.close()

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise _Drop from exc
        if not data:
            # Client hung up (or shut down its sending side): answer what it already sent if the
            # socket still takes it, discard any half line, and close.
            if conn.outbuf:
                try:
                    conn.sock.send(conn.outbuf)
                except OSError:
                    pass
            raise _Drop
        conn.inbuf += data
        while True:
            nl = conn.inbuf.find(b"\n")
            if nl < 0:
                break
            line = bytes(conn.inbuf[:nl])
            del conn.inbuf[: nl + 1]
            conn.deadline = time.monotonic() + self.idle_timeout  # a complete line is activity
            if conn.discarding:
                conn.discarding = False  # this was the tail of the over-long line
                continue
            conn.outbuf += _encode(self._handle(line))
        if len(conn.inbuf) > MAX_LINE_BYTES and not conn.discarding:
            too_long = f"malformed command: line is longer than {MAX_LINE_BYTES} bytes"
            conn.outbuf += _encode({"ok": False, "error": too_long})
            conn.discarding = True
        if conn.discarding:
            conn.inbuf.clear()
        if len(conn.outbuf) > _MAX_PENDING_REPLY_BYTES:
            raise _Drop

    def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            cmd = parse_command(line)
        except CommandError as exc:
            reply: dict[str, Any] = {"ok": False, "error": str(exc)}
            if exc.command_id is not None:
                reply["id"] = exc.command_id
            return reply
        with self._cond:
            self._queue.append(cmd)
            self._cond.notify_all()
        if self.on_received is not None:
            try:
                self.on_received(cmd)
            except Exception:  # noqa: BLE001 - an observer bug must not break the channel
                log.exception("on_received hook failed")
        return {"ok": True, "id": cmd.id, "status": "received"}

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise _Drop from exc
        del conn.outbuf[:sent]


class _Drop(Exception):
    """Internal: close this connection (hung up, reset, or not reading its replies)."""


def _encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


# --- clients ---------------------------------------------------------------------------------------


class ControlClient:
    """One connection to a run's control socket, reused for many commands (the dashboard's client).

    Connects lazily on the first `send`; after any failure the connection is dropped and the next
    `send` reconnects (e.g. after the engine was restarted with --resume). The server closes a
    connection left idle for `IDLE_TIMEOUT_S`, so a kept connection found closed is replaced
    before sending, and one lost before any reply arrived is replaced once and the line resent (the
    server queues a command only while answering it, so no command is applied twice). Thread-safe.
    """

    def __init__(self, run_dir: str | os.PathLike[str], timeout: float = 5.0) -> None:
        self.path = control_socket_path(run_dir)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Open the connection now (otherwise the first `send` does); `ControlError` if nobody listens."""
        with self._lock:
            self._connect()

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fsencode(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise ControlError(
                f"no engine is listening at {self.path} (the run has finished or was started elsewhere)"
            ) from None
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot connect to {self.path}: {exc.strerror or exc}") from exc
        self._sock = sock
        self._buf.clear()
        return sock

    def send(self, payload: dict[str, Any] | str | BaseModel) -> dict[str, Any]:
        """Send one command (a dict, a command model, or a raw JSON line) and return the parsed reply.

        The reply says only that the command was received (or why it is malformed); the decision
        comes later in the run log as command_applied / command_rejected with the same id.
        """
        line = _to_line(payload)
        with self._lock:
            raw = self._exchange(line)
        try:
            reply = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            reply = None
        if not isinstance(reply, dict):
            raise ControlError(f"unreadable reply from the engine: {raw[:200]!r}")
        return reply

    def _exchange(self, line: bytes) -> bytes:
        if self._sock is not None and _readable(self._sock):
            self._close()  # nothing is due from an idle connection: the server closed it (or junk)
        while True:
            reused = self._sock is not None
            sock = self._connect()
            try:
                sock.sendall(line)
                return self._read_line(sock)
            except TimeoutError:
                self._close()
                msg = f"no reply from the engine at {self.path} within {self.timeout:g} s"
                raise ControlError(msg) from None
            except OSError as exc:
                replied = bool(self._buf)  # part of a reply came: the line was seen, never resend it
                self._close()
                if reused and not replied:
                    continue  # closed as idle while the line was on its way: once more, on a fresh one
                raise ControlError(f"lost the connection to {self.path}: {exc.strerror or exc}") from exc

    def _read_line(self, sock: socket.socket) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(0, "the engine closed the connection")
            self._buf += chunk

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()

    def close(self) -> None:
        """Close the connection (a later `send` reconnects)."""
        with self._lock:
            self._close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readable(sock: socket.socket) -> bool:
    """Whether `sock` has something to read (data, end of file or an error) right now."""
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(0))


def _to_line(payload: dict[str, Any] | str | BaseModel) -> bytes:
    if isinstance(payload, BaseModel):
        payload = command_to_wire(payload)  # type: ignore[arg-type]
    if isinstance(payload, dict):
        text = json.dumps(payload, separators=(",", ":"))
    elif isinstance(payload, str):
        text = payload.rstrip("\r\n")
        if "\n" in text:
            raise ValueError("a command payload must be a single line")
    else:
        raise TypeError(f"payload must be a dict, str or command model, not {type(payload).__name__}")
    return text.encode("utf-8") + b"\n"


def send_command(
    run_dir: str | os.PathLike[str], payload: dict[str, Any] | str | BaseModel, timeout: float = 5.0
) -> dict[str, Any]:
    """Connect, send one command, return the engine's reply (`{"ok": ..., "id": ..., ...}`).

    Raises `ControlError` if no engine is listening or it does not answer within `timeout`.
    """
    with ControlClient(run_dir, timeout=timeout) as client:
        return client.send(payload)


__all__ = [
    "IDLE_TIMEOUT_S",
    "MAX_CLIENTS",
    "MAX_SOCKET_PATH_BYTES",
    "SOCKET_NAME",
    "CommandServer",
    "ControlClient",
    "ControlError",
    "control_socket_path",
    "send_command",
]

"""llama.cpp RPC GPU workers: a safe probe of an rpc-server's devices, and registering workers with llama.cpp.

`rpc-server` (llama.cpp's tools/rpc) exposes the devices of another machine; llama.cpp's RPC
backend then places layers on them as if they were local GPUs. Two facts shape this module:

- llama.cpp *aborts the process* when a handshake fails (GGML_ABORT in ggml-rpc.cpp), so a
  worker is first asked here, in Python, over the same wire protocol (HELLO, DEVICE_COUNT,
  GET_DEVICE_MEMORY: little-endian `| cmd u8 | size u64 | payload |`, replies `| size u64 | payload |`),
  and registered with llama.cpp only once it answered correctly.
- The RPC protocol has no encryption or authentication: anyone who reaches the port can run
  computations on that machine and read what passes. Workers are for trusted LANs only; the UI
  says so wherever a worker is added or used.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field

from app.core.errors import HarmonicaError

log = logging.getLogger(__name__)

RPC_PROTO_MAJOR = 7  # ggml-rpc.h RPC_PROTO_MAJOR_VERSION of the llama.cpp Harmonica ships
RPC_PROTO_MINOR = 0
_CMD_GET_DEVICE_MEMORY = 11
_CMD_HELLO = 14
_CMD_DEVICE_COUNT = 15
_CONN_CAPS = 24  # transport.h RPC_CONN_CAPS_SIZE; all zero: plain TCP
MAX_DEVICES = 16
UNENCRYPTED_WARNING = (
    "RPC traffic between this computer and GPU workers is not encrypted or authenticated: anyone on the network "
    "can read it or use the worker. Use GPU workers only on a network you trust, never over the internet."
)


class WorkerError(HarmonicaError):
    """A GPU worker could not be reached or is not a compatible rpc-server; the message says which."""


@dataclass(frozen=True)
class WorkerDevice:
    """One device of a GPU worker, with its memory as the worker's backend reports it."""

    endpoint: str  # "192.168.1.20:50052"
    index: int
    memory_free: int
    memory_total: int
    label: str = ""  # the worker's name in Harmonica
    device: str = ""  # llama.cpp's device name once registered ("RPC0", "RPC1", … numbered across all workers)

    @property
    def name(self) -> str:
        """The device name llama.cpp knows it by (before registration: host:port#index)."""
        return self.device or f"{self.endpoint}#{self.index}"


@dataclass
class WorkerInfo:
    endpoint: str
    version: tuple[int, int, int]
    devices: list[WorkerDevice] = field(default_factory=list)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise WorkerError("the worker closed the connection")
        out += chunk
    return bytes(out)


def _call(sock: socket.socket, cmd: int, payload: bytes, want: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
    if size != want:
        raise WorkerError(f"unexpected reply of {size} bytes to command {cmd}")
    return _recv_exact(sock, want)


def probe_worker(host: str, port: int, *, label: str = "", timeout: float = 3.0) -> WorkerInfo:
    """Ask an rpc-server for its protocol version, devices and their memory, without llama.cpp.

    Raises WorkerError with a sentence for the user (unreachable, not an rpc-server, another version).
    """
    endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = label or endpoint
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise WorkerError(
            f"Cannot reach the GPU worker {name} ({exc.strerror or exc}). Is rpc-server running there and listening "
            "on this network (rpc-server -H 0.0.0.0 -p PORT)?"
        ) from None
    try:
        sock.settimeout(timeout)
        hello = _call(sock, _CMD_HELLO, bytes(_CONN_CAPS), 4 + _CONN_CAPS)
        version = (hello[0], hello[1], hello[2])
        if version[0] != RPC_PROTO_MAJOR or version[1] > RPC_PROTO_MINOR:
            raise WorkerError(
                f"The GPU worker {name} runs RPC protocol {'.'.join(map(str, version))}, but this Harmonica speaks "
                f"{RPC_PROTO_MAJOR}.{RPC_PROTO_MINOR}. Run an rpc-server from the same llama.cpp version as Harmonica's."
            )
        (count,) = struct.unpack("<I", _call(sock, _CMD_DEVICE_COUNT, b"", 4))
        devices = []
        for i in range(min(count, MAX_DEVICES)):
            free, total = struct.unpack("<QQ", _call(sock, _CMD_GET_DEVICE_MEMORY, struct.pack("<I", i), 16))
            devices.append(WorkerDevice(endpoint, i, int(free), int(total), label))
        return WorkerInfo(endpoint, version, devices)
    except WorkerError as exc:
        if str(exc).startswith("The GPU worker"):
            raise
        raise WorkerError(f"{name} did not answer like llama.cpp's rpc-server ({exc}).") from None
    except (OSError, struct.error) as exc:
        raise WorkerError(f"{name} did not answer like llama.cpp's rpc-server ({exc}).") from None
    finally:
        sock.close()


# --- registering with llama.cpp ---------------------------------------------------------------------

_lock = threading.Lock()
_registered: dict[str, int] = {}  # endpoint → device count


def rpc_available() -> bool:
    """Whether the llama.cpp Harmonica runs was built with the RPC backend (GGML_RPC)."""
    try:
        from app.core import llama_ext

        llama_ext.load_dynamic_backends()  # a GGML_BACKEND_DL build has the RPC backend as a plugin
        lib = llama_ext.ggml_lib()
        fn = lib.ggml_backend_reg_by_name
        fn.argtypes, fn.restype = [ctypes.c_char_p], ctypes.c_void_p
        return bool(fn(b"RPC"))
    except Exception:  # noqa: BLE001 - llama.cpp missing or too old: no RPC
        return False


def register(info: WorkerInfo) -> list[WorkerDevice]:
    """Add a probed worker's devices to llama.cpp's device list (once per process).

    Returns them with their llama.cpp names ("RPC<n>", numbered across every worker in the order
    they were added; llama.cpp gives each the worker's endpoint as its description) and the memory
    llama.cpp's RPC backend reports. Raises WorkerError when this llama.cpp has no RPC backend.
    """
    from dataclasses import replace

    from app.core import llama_ext

    _add_server(info)
    named = [d for d in llama_ext.backend_devices() if d.backend == "RPC" and d.description == info.endpoint]
    if len(named) < len(info.devices):
        raise WorkerError(
            f"llama.cpp lists {len(named)} device(s) for the GPU worker {info.endpoint}, not {len(info.devices)}."
        )
    return [
        replace(dev, device=n.name, memory_free=n.memory_free, memory_total=n.memory_total)
        for dev, n in zip(info.devices, named, strict=False)
    ]


def _add_server(info: WorkerInfo) -> None:
    from app.core import llama_ext

    with _lock:
        if info.endpoint in _registered:
            return
        llama_ext.load_dynamic_backends()
        lib = llama_ext.ggml_lib()
        by_name = lib.ggml_backend_reg_by_name
        by_name.argtypes, by_name.restype = [ctypes.c_char_p], ctypes.c_void_p
        reg = by_name(b"RPC")
        if not reg:
            raise WorkerError(
                "This Harmonica's llama.cpp was built without the RPC backend, so it cannot use GPU workers. "
                "Install a build with GGML_RPC (see the README's \u201cPooled GPUs\u201d)."
            )
        get_proc = lib.ggml_backend_reg_get_proc_address
        get_proc.argtypes, get_proc.restype = [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_void_p
        addr = get_proc(reg, b"ggml_backend_rpc_add_server")
        if not addr:
            raise WorkerError("This llama.cpp's RPC backend cannot add servers.")
        add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(addr)
        register_fn = lib.ggml_backend_register
        register_fn.argtypes, register_fn.restype = [ctypes.c_void_p], None
        server_reg = add_server(info.endpoint.encode())
        if not server_reg:
            raise WorkerError(f"llama.cpp could not add the GPU worker {info.endpoint}.")
        register_fn(server_reg)
        _registered[info.endpoint] = len(info.devices)
        log.info("GPU worker %s registered with %d device(s)", info.endpoint, len(info.devices))

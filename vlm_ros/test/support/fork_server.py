"""Start installed vlm_ros scripts by forking a preloaded interpreter instead of exec'ing one.

Why: before a vlm_node does anything it spends about 5 s of CPU importing torch and
transformers, and the system tests start over a hundred nodes per distro: on the 2-core CI
machine that import was more than half of each leg. A server process per pytest worker
imports what the node imports, once (no rclpy.init, no torch operation, one thread), then
forks a child per start. The child becomes the script: its argv, working directory,
environment and stdout/stderr are the caller's, and it runs the installed console script
itself (runpy) and leaves through the interpreter's normal exit, so its exit status, signal
handling, log and DDS traffic are those of an exec'd process. A start in an environment that
differs from the server's is exec'd as before: libraries read some variables at import. The
preloaded heap is frozen (gc.freeze), so that no child's collections walk it: one difference
from an exec'd process, which no output shows (vlm_node reports its own freeze's count).

Run as a script, this module is the server; ``ForkServer`` is the client side.
"""

import gc
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import threading
import time

# The engine imports no rclpy: rclpy's libraries start LTTng listener threads, which a fork
# would not copy, so the child imports rclpy (and the node, ~1 s) itself.
# The rest is what loading the tiny LLaVA imports (from_pretrained imports lazily).
PRELOAD = ('vlm_ros.engine.local', 'transformers.modeling_utils', 'transformers.processing_utils',
           'transformers.generation.utils', 'transformers.models.auto.modeling_auto',
           'transformers.models.auto.processing_auto', 'transformers.quantizers.auto',
           'transformers.tokenization_utils_tokenizers',
           'transformers.models.llava.modeling_llava',
           'transformers.models.llava.processing_llava', 'transformers.models.clip.modeling_clip',
           'transformers.models.clip.image_processing_clip',
           'transformers.models.llama.modeling_llama', 'accelerate', 'sympy', 'torch._dynamo')
_MAX_MESSAGE = 1 << 20
# Variables that change in a test process but are read only at run time (the child gets them
# from the request): pytest's, and inductor's cache folder, which torch writes into os.environ
# the first time the process compiles (e.g. an engine test's warm-up).
_READ_LATER = ('PYTEST_CURRENT_TEST', 'TORCHINDUCTOR_CACHE_DIR')


def _threads() -> int:
    return len(os.listdir('/proc/self/task'))


def _serve(sock: socket.socket):
    """Answer start requests until the client goes; return (request, fds) in a child."""
    children = set()
    while True:
        readable, _, _ = select.select([sock], [], [], 0.05)
        while children:  # report every child that ended, as Popen.returncode gives it
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            sock.send(json.dumps({'pid': pid, 'code': os.waitstatus_to_exitcode(status)})
                      .encode())
        if not readable:
            continue
        message, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 2)
        if not message:  # the client (pytest worker) ended: so do the children it left
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            return None
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sock.close()
            return request, fds
        children.add(pid)
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({'id': request['id'], 'pid': pid}).encode())


def _become(request: dict, fds: list):
    """In the child: take the caller's stdio, cwd, environment and argv; run the script."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in (devnull, *fds):
        os.close(fd)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    sys.argv = list(request['argv'])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as for an exec'd script
    runpy.run_path(request['argv'][0], run_name='__main__')


def main() -> None:
    """Preload, check that the process is still single-threaded, then serve."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    import numpy  # noqa: F401  its OpenBLAS pool stops before a fork and restarts after
    pool = _threads()
    for name in PRELOAD:
        __import__(name)
    if _threads() != pool or 'rclpy' in sys.modules:  # a fork copies one thread only
        sock.send(json.dumps({'error': f'{_threads() - pool} threads after preloading, '
                                       f"rclpy {'rclpy' in sys.modules}"}).encode())
        return
    # A child's exit ends with a full collection: over the preloaded heap it took 2.4-2.9 s of
    # CPU a child (0.6 s frozen), and more than 30 s under load, as every page it touched was
    # copied from the server's. vlm_node freezes its heap at configure all the same.
    gc.freeze()
    sock.send(json.dumps({'ready': True}).encode())
    child = _serve(sock)
    if child is not None:
        _become(*child)


class ForkedProcess:
    """The Popen operations tests use, for a child of the fork server."""

    def __init__(self, pid: int, args: list):
        self.pid = pid
        self.args = args
        self.returncode = None
        self._ended = threading.Event()
        self._readers = []
        self._output = []

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def read_pipes(self, fds: list) -> None:
        """Collect the child's stdout and stderr pipes (read ends) for communicate()."""
        self._output = [[] for _ in fds]
        self._readers = [threading.Thread(target=self._drain, args=(fd, chunks), daemon=True)
                         for fd, chunks in zip(fds, self._output, strict=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(fd: int, chunks: list) -> None:
        with open(fd, 'rb', closefd=True) as pipe:
            for chunk in iter(lambda: pipe.read1(1 << 16), b''):
                chunks.append(chunk)

    def communicate(self, timeout=None):
        """Wait for the end; return (stdout, stderr) as text, or (None, None) without pipes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait(timeout)
        if not self._readers:
            return None, None
        for reader in self._readers:  # EOF: the child and whatever inherited its pipes ended
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        return tuple(b''.join(chunks).decode(errors='replace') for chunks in self._output)

    def send_signal(self, sig) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # ended; its exit report is on the way
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """Client of one preloaded server process (started on first use, per pytest worker)."""

    def __init__(self):
        self._env = dict(os.environ)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen([sys.executable, __file__, str(theirs.fileno())],
                                      pass_fds=[theirs.fileno()])
        theirs.close()
        self._sock = ours
        first = json.loads(ours.recv(_MAX_MESSAGE) or b'{"error": "no answer"}')
        self.error = first.get('error')
        self._lock = threading.Lock()
        self._started = {}
        self._children = {}
        self._next_id = 0
        if self.error is None:
            threading.Thread(target=self._read, daemon=True).start()

    def serves(self, env) -> bool:
        """Say whether a start with env (None: this process's) can be forked."""
        current = dict(os.environ if env is None else env)
        for variables in (current, self._env):
            for name in _READ_LATER:
                variables.pop(name, None)
        return self.error is None and current == self._env

    def start(self, args: list, log=None) -> ForkedProcess:
        """Start the script args[0] with args[1:]; stdout and stderr go to log, or to pipes.

        With pipes, communicate() returns both as text, as Popen(..., text=True) does.
        """
        pipes = [] if log is not None else [os.pipe(), os.pipe()]
        fds = [log.fileno()] * 2 if log is not None else [write for _, write in pipes]
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            waiter = self._started[ident] = [threading.Event(), None]
        request = {'id': ident, 'argv': list(args), 'cwd': os.getcwd(), 'env': dict(os.environ)}
        try:
            socket.send_fds(self._sock, [json.dumps(request).encode()], fds)
        finally:
            for _, write in pipes:
                os.close(write)
        if not waiter[0].wait(30.0):
            raise AssertionError('the fork server did not start ' + args[0])
        child = waiter[1]
        child.args = list(args)
        if pipes:
            child.read_pipes([read for read, _ in pipes])
        return child

    def run(self, args: list, timeout=None) -> subprocess.CompletedProcess:
        """Run args to the end, as subprocess.run(args, capture_output=True, text=True)."""
        child = self.start(args)
        try:
            out, err = child.communicate(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            raise
        return subprocess.CompletedProcess(args, child.returncode, out, err)

    def _read(self) -> None:
        while True:
            try:
                message = self._sock.recv(_MAX_MESSAGE)
            except OSError:  # closed by close()
                return
            if not message:
                return
            report = json.loads(message)
            with self._lock:
                if 'id' in report:
                    waiter = self._started.pop(report['id'])
                    child = self._children[report['pid']] = ForkedProcess(report['pid'], [])
                    waiter[1] = child
                    waiter[0].set()
                else:
                    self._children.pop(report['pid'])._exited(report['code'])

    def close(self) -> None:
        """End the server; it kills children still running."""
        self._sock.shutdown(socket.SHUT_RDWR)  # close() alone would not wake _read's recv
        self._sock.close()
        self._proc.wait(30.0)


_shared = []


def shared() -> ForkServer:
    """Return this process's fork server, started on first use.

    A test that changed this process's environment for good makes a new one, which imports
    in the environment its children get; the older ones keep serving the children they have.
    """
    if not _shared or not _shared[-1].serves(None):
        _shared.append(ForkServer())
    return _shared[-1]


def close_all() -> None:
    """End every fork server of this process (their children still running are killed)."""
    while _shared:
        _shared.pop().close()


def start_tool(args: list, env=None):
    """Start an installed Python tool with piped text output: forked where it can be."""
    args = [str(arg) for arg in args]
    if shared().serves(env):
        return shared().start(args)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def run_tool(args: list, timeout=None, env=None) -> subprocess.CompletedProcess:
    """Run an installed Python tool to its end, output captured: forked where it can be."""
    args = [str(arg) for arg in args]
    if shared().serves(env):
        return shared().run(args, timeout)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


if __name__ == '__main__':
    main()

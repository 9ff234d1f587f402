"""A real OpenAI-compatible server for the openai backend's tests: ``transformers serve``.

Why this server: it ships with the pinned transformers (plus its [serving] extras), serves image
inputs on /v1/chat/completions with SSE streaming and usage counts, and runs the tests' tiny
trained LLaVA on a CPU with the same weights and greedy decoding, so remote answers can be
compared token for token with in-process ones. vLLM and SGLang need a GPU; Ollama cannot load
a save_pretrained checkpoint. No fake server is involved: every fault is done to the real
process. Stopping it refuses connections; SIGSTOP leaves the kernel accepting connections and
buffering requests that nobody answers (timeouts); SIGKILL cuts off an answer mid-stream; a
restart on the same port shows recovery; hiding its weights and POST /reset (it then reloads
the model for the next request) makes it answer HTTP 500.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from vlm_ros.engine import EngineConfig, RemoteConfig
from waiting import wait_until

STARTUP_TIMEOUT = 120.0  # s; about 10 s on an idle 2-core machine
# A chat request for a test frame is 1.6 to 2.4 kB (the JPEG data URL alone is over 1 kB);
# a reachability check (GET /models) is about 200 bytes.
CHAT_REQUEST_BYTES = 1000

# Run a node test on both backends: @both_backends, with the test taking the backend fixture.
both_backends = pytest.mark.parametrize('backend', ['transformers', 'openai'], indirect=True)


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def remote_config(server: 'ServedModel', **remote) -> EngineConfig:
    """Return the openai-backend config of the tiny model on server, as the node tests use it."""
    return EngineConfig(model=server.model, max_new_tokens=96, backend='openai',
                        remote=RemoteConfig(**{'base_url': server.base_url, **remote}))


class ServedModel:
    """One ``transformers serve`` process pinned to one checkpoint, on a fixed loopback port."""

    def __init__(self, model_dir, log_path: pathlib.Path):
        self.model = str(model_dir)
        self.port = free_port()
        self.log_path = log_path
        self.proc = None
        self._log = None

    @property
    def base_url(self) -> str:
        """The API root clients are configured with."""
        return f'http://127.0.0.1:{self.port}/v1'

    def start(self) -> None:
        """Start the server and wait until /health answers (model loaded)."""
        executable = pathlib.Path(sys.executable).with_name('transformers')
        self._log = self.log_path.open('a')
        self.proc = subprocess.Popen(
            [str(executable), 'serve', self.model, '--host', '127.0.0.1', '--port',
             str(self.port), '--device', 'cpu'],
            env={**os.environ, 'HF_HUB_OFFLINE': '1'}, stdout=self._log,
            stderr=subprocess.STDOUT)
        wait_until(self._healthy, STARTUP_TIMEOUT, f'transformers serve on port {self.port}')

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f'transformers serve exited with {self.proc.returncode}:\n'
                                 + self.log_path.read_text()[-3000:])
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{self.port}/health', timeout=2):
                return True
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the server (continuing it first if blocked) and wait until it has exited."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig != signal.SIGKILL:
                self.proc.send_signal(signal.SIGCONT)  # a stopped process acts on it only then
        self.proc.wait(timeout)
        self._log.close()

    def kill(self) -> None:
        """Kill the server at once, as a crash would: open connections are reset or cut."""
        self.stop(signal.SIGKILL)

    def block(self) -> None:
        """Freeze the server: connections are still accepted, nothing is answered."""
        self.proc.send_signal(signal.SIGSTOP)

    def unblock(self) -> None:
        """Let a frozen server go on."""
        self.proc.send_signal(signal.SIGCONT)

    def ensure_running(self) -> None:
        """Continue or restart the server, whatever an earlier test left it in."""
        if self.proc is not None and self.proc.poll() is None:
            self.unblock()
        else:
            self.start()

    def reset(self) -> None:
        """POST /reset: the server drops its model and loads it again for the next request."""
        request = urllib.request.Request(f'http://127.0.0.1:{self.port}/reset', method='POST')
        with urllib.request.urlopen(request, timeout=30):
            pass

    def requests_unread(self) -> int:
        """Count the connections whose request the server has not read (Linux /proc/net/tcp).

        While the server is blocked this is how a test knows a request has reached it. A client
        sends one request at a time on a connection, so chat requests in flight are connections
        with a chat request's bytes waiting; a total of bytes is no count of requests (one
        caption's 2.4 kB were once taken for two requests).
        """
        waiting = 0
        for table in ('/proc/net/tcp', '/proc/net/tcp6'):
            for line in pathlib.Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                established = fields[3] == '01'
                if established and int(fields[1].rsplit(':', 1)[1], 16) == self.port:
                    waiting += int(fields[4].split(':')[1], 16) > CHAT_REQUEST_BYTES
        return waiting

    def wait_for_request(self, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until count chat requests sit unread in the blocked server's sockets."""
        wait_until(lambda: self.requests_unread() >= count, timeout,
                   f'{count} chat request(s) to reach the blocked server')

"""A small real OpenAI-compatible server whose answers a test writes: what a bad server sends.

transformers serve (serve_harness.py) behaves: the faults done to it are a process's (stopped,
frozen, killed). What a server sends inside an answer cannot be made of it: more pieces than
max_tokens, one huge piece, keep-alive comments and no data, a whole answer and then an open
stream, a request refused in the words of vLLM, SGLang or TGI. This server is real HTTP and SSE
on a loopback port, in the test's process; only what it answers is scripted, and the openai
client talks to it as to any server.

Each chat request takes the next script given to play() (the last one again when none is left)
and calls it with a Reply, which writes the answer's events. GET /v1/models answers one model,
for the reachability check.
"""

import http.server
import json
import select
import socket
import threading

MODEL = 'scripted-model'


class Reply:
    """One answer being streamed: each write tells whether the client is still reading.

    The stream's headers (HTTP 200) go out with its first event; refuse() answers an HTTP
    error instead.
    """

    def __init__(self, handler: http.server.BaseHTTPRequestHandler, server: 'ScriptedServer'):
        self._handler = handler
        self._server = server
        self._sent = False  # the headers: of the stream, or of refuse()'s error

    def refuse(self, status: int, body) -> None:
        """Answer HTTP status with body instead of a stream: a dict as JSON, a str as it is."""
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self._sent = True
        self._handler.send_response(status)
        self._handler.send_header('Content-Type', 'application/json')
        self._handler.send_header('Content-Length', str(len(data)))
        self._handler.send_header('Connection', 'close')
        self._handler.end_headers()
        self._handler.wfile.write(data)

    def error(self, error) -> bool:
        """Send an error event inside the stream, as SGLang refuses a request after HTTP 200."""
        return self._write(f'data: {json.dumps({"error": error})}\n\n')

    def piece(self, text: str, finish=None, usage=None) -> bool:
        """Send one chunk of text (and a finish_reason, a usage report); False: client gone."""
        chunk = {'id': 'scripted', 'object': 'chat.completion.chunk', 'created': 0,
                 'model': MODEL, 'choices': [{'index': 0, 'delta': {'content': text},
                                              'finish_reason': finish}]}
        if usage is not None:
            chunk['usage'] = {'prompt_tokens': 1, 'completion_tokens': usage,
                              'total_tokens': usage + 1}
        return self._write(f'data: {json.dumps(chunk)}\n\n')

    def finish(self, reason: str = 'stop', usage=None) -> bool:
        """End the answer as a server does: its finish_reason, the usage report, [DONE]."""
        return self.piece('', reason, usage) and self._write('data: [DONE]\n\n')

    def flood(self, text: str, count: int = 20000) -> None:
        """Send text count times, whatever max_tokens says, then finish; stop once no client."""
        if all(self.piece(text) for _ in range(count)):
            self.finish()

    def keep_alive(self) -> None:
        """Send an SSE comment every 0.2 s, and no data, until the client goes."""
        while self._write(': keepalive\n\n') and not self._server.closing.wait(0.2):
            pass

    def hold(self) -> None:
        """Send nothing more and keep the stream open until the client closes it."""
        self.start_stream()
        sock = self._handler.connection
        while not self._server.closing.is_set():
            if select.select([sock], [], [], 0.05)[0] and not sock.recv(1, socket.MSG_PEEK):
                self._server.gone.set()
                return

    def start_stream(self) -> None:
        """Send the stream's headers, unless they (or refuse()'s) went out already."""
        if not self._sent:
            self._sent = True
            self._handler.send_response(200)
            self._handler.send_header('Content-Type', 'text/event-stream')
            self._handler.send_header('Connection', 'close')
            self._handler.end_headers()

    def _write(self, text: str) -> bool:
        try:
            self.start_stream()
            self._handler.wfile.write(text.encode())
            self._handler.wfile.flush()
        except OSError:  # the client closed the stream
            self._server.gone.set()
            return False
        return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server: 'ScriptedServer'

    def do_GET(self):  # noqa: N802 - http.server's handler names
        self.server.checked.set()
        body = json.dumps({'object': 'list', 'data': [{'id': MODEL, 'object': 'model'}]})
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self):  # noqa: N802 - http.server's handler names
        request = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        script = self.server.next_script(request)
        reply = Reply(self, self.server)
        script(reply)
        reply.start_stream()  # a script that sent nothing answers an empty stream
        self.close_connection = True

    def log_message(self, *args):
        pass


class ScriptedServer(http.server.ThreadingHTTPServer):
    """The server, serving on its own thread from construction until close() (a context).

    ``model`` is the one model it names (it answers for any). ``requests``: every chat
    request's JSON body, in order; ``gone`` is set once a client closed an answer the server
    was still sending or holding open; ``checked`` once a client asked GET /models (a
    reachability check).
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(('127.0.0.1', 0), _Handler)
        self.model = MODEL
        self.requests = []
        self.gone = threading.Event()
        self.checked = threading.Event()
        self.closing = threading.Event()
        self._scripts = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,),
                                        name='scripted-server', daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        """The API root a client is configured with."""
        return f'http://127.0.0.1:{self.server_address[1]}/v1'

    def play(self, *scripts) -> None:
        """Answer the next chat requests with scripts, callables that take a Reply, in order."""
        with self._lock:
            self._scripts.extend(scripts)

    def next_script(self, request: dict):
        """Record a chat request and return the script that answers it."""
        with self._lock:
            self.requests.append(request)
            return self._scripts.pop(0) if len(self._scripts) > 1 else self._scripts[0]

    def close(self) -> None:
        """End every answer in progress and stop serving."""
        self.closing.set()
        self.shutdown()
        self.server_close()
        self._thread.join()

    def __exit__(self, *exc):
        self.close()

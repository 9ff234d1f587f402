"""An HTTP server that refuses every request with 401 and echoes its headers in the body.

Some API gateways do this. The openai backend must never let the echoed key reach a Plan,
/diagnostics or a log. Started as its own process by the tests; prints its port, then serves
until terminated.
"""

import http.server
import json


class EchoHeaders(http.server.BaseHTTPRequestHandler):
    """401 with {"error": ..., "request_headers": {...}} for every method."""

    def _refuse(self):
        length = int(self.headers.get('Content-Length') or 0)
        self.rfile.read(length)
        body = json.dumps({'error': {'message': 'invalid api key', 'type': 'auth'},
                           'request_headers': dict(self.headers)}).encode()
        self.send_response(401)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse  # noqa: N815 - http.server's handler names

    def log_message(self, *args):
        pass


if __name__ == '__main__':
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), EchoHeaders)
    print(server.server_address[1], flush=True)
    server.serve_forever()

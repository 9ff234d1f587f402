"""The reachability check's model finding: a name the server does not list is said at once.

GET {base_url}/models answers with the models a server serves. When requests name another one
(a typo in remote_model, or a server started with --served-model-name), every request would
fail; /diagnostics says so before the first one. Each test here serves a list from a real
HTTP server in this process and runs the node's check (check_forever) with the openai client
against it, so what is read is what the client makes of a server's JSON, hostile ones too.
"""

import asyncio
import http.server
import json
import threading

import openai
import pytest
from vlm_ros.engine import RemoteConfig
from vlm_ros.engine.remote.failures import NO_KEY
from vlm_ros.engine.remote.probe import ANSWERED, Reach, check_forever


class _ModelsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's handler names
        body = self.server.body.encode()
        self.send_response(200 if self.path == '/v1/models' else 404)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        """Keep the test's output to its failures."""


class ModelsServer(http.server.ThreadingHTTPServer):
    """Answers GET /v1/models with the body a test sets (serve or serve_raw)."""

    body = '{}'

    @property
    def base_url(self) -> str:
        """The API root, as base_url names it."""
        return f'http://127.0.0.1:{self.server_address[1]}/v1'

    def serve(self, ids: list) -> None:
        """List these model ids, as vLLM, Ollama and transformers serve shape the list."""
        self.serve_raw({'object': 'list', 'data': [
            {'id': model_id, 'object': 'model', 'created': 0, 'owned_by': 'test'}
            for model_id in ids]})

    def serve_raw(self, body) -> None:
        """Answer this JSON value, whatever its shape."""
        self.body = json.dumps(body)


@pytest.fixture
def models():
    server = ModelsServer(('127.0.0.1', 0), _ModelsHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def check(server: ModelsServer, model: str, remote_model: str = '', key: str = NO_KEY) -> tuple:
    """Run the node's check until its first finding: (reachable, note, problem).

    ``model`` is the name requests carry: remote_model, or the model parameter when it is ''.
    """
    async def first_finding():
        found = asyncio.get_running_loop().create_future()

        def reach(*finding):
            if not found.done():
                found.set_result(finding)

        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        remote = RemoteConfig(base_url=server.base_url, model=remote_model)
        task = asyncio.create_task(check_forever(client, remote, key, reach, model))
        try:
            return await asyncio.wait_for(found, 10.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()

    return asyncio.run(first_finding())


def test_a_remote_model_the_server_does_not_list_is_named_with_what_it_lists(models):
    models.serve(['Qwen/Qwen2.5-VL-7B-Instruct', 'llava-hf/llava-1.5-7b-hf'])
    assert check(models, 'qwen-vl', remote_model='qwen-vl') == (
        True, 'GET /models answered', f"{models.base_url} serves 'Qwen/Qwen2.5-VL-7B-Instruct', "
        "'llava-hf/llava-1.5-7b-hf' (GET /models), not remote_model 'qwen-vl'")


def test_a_name_from_the_model_parameter_says_remote_model_is_the_one_to_set(models):
    """A server started with --served-model-name serves a hub id or a path under another name."""
    models.serve(['robot-vlm'])
    problem = check(models, '/models/llava-1.5-7b-hf')[2]
    assert problem == (f"{models.base_url} serves 'robot-vlm' (GET /models), not model "
                       "'/models/llava-1.5-7b-hf' (remote_model is empty: set it to the served "
                       'name)')


@pytest.mark.parametrize('listed, name', [
    ('llava-hf/llava-1.5-7b-hf', 'llava-hf/llava-1.5-7b-hf'),  # vLLM, SGLang: the same id
    ('llava:latest', 'llava'),  # Ollama lists the tag a request may leave out
    ('llava', 'llava:latest'),
    ('llava:latest', 'library/llava'),  # and its default namespace
    ('qwen2.5vl:7b', 'Qwen2.5VL:7b'),  # Ollama ignores case
    ('/srv/models/llava', '/srv/models/llava/'),  # a local directory, as typed
])
def test_a_listed_model_is_no_problem_in_any_form_its_server_accepts(models, listed, name):
    models.serve(['another-model', listed])
    assert check(models, name, remote_model=name) == (True, 'GET /models answered', '')


def test_a_tag_other_than_the_listed_one_is_a_problem(models):
    models.serve(['llava:13b'])
    assert "not remote_model 'llava:7b'" in check(models, 'llava:7b', 'llava:7b')[2]


@pytest.mark.parametrize('body', [
    {'object': 'list', 'data': []},  # a server that lists nothing and answers any name
    {'object': 'list'},
    {'data': 'llava'},
    {'data': [1, None, {'id': 5}, {'name': 'llava'}]},  # no id the name could be
    [],
    'not a list of models',
])
def test_a_list_without_model_ids_says_nothing(models, body):
    models.serve_raw(body)
    reachable, note, problem = check(models, 'llava', remote_model='llava')
    assert (reachable, problem) == (True, ''), note


def test_a_hostile_list_is_named_in_a_few_short_printable_ids_with_the_key_redacted(models):
    key = 'sk-probe-0123456789abcdef'
    long_id = 'a' * 5000
    models.serve([f'echo-{key}', 'bell\x07\x1b[2J', long_id, *[f'm{i}' for i in range(997)]])
    problem = check(models, 'llava', remote_model='llava', key=key)[2]
    assert problem == (f"{models.base_url} serves 'echo-<api key>', 'bell\\x07\\x1b[2J', "
                       f"'{'a' * 100}...' and 997 more (GET /models), not remote_model 'llava'")
    assert problem.isprintable()


def test_the_problem_clears_when_a_later_check_lists_the_model_or_a_request_is_answered(
        models):
    reach = Reach()
    models.serve(['llava-13b'])
    reach(*check(models, 'llava-7b', 'llava-7b'))
    assert "not remote_model 'llava-7b'" in reach.status()['backend_problem']
    reach(False, 'cannot reach the server (refused)')  # a failed request says nothing of it
    assert "not remote_model 'llava-7b'" in reach.status()['backend_problem']
    models.serve(['llava-13b', 'llava-7b'])  # the server restarted with it
    reach(*check(models, 'llava-7b', 'llava-7b'))
    assert reach.status()['backend_problem'] == ''

    models.serve(['llava-13b'])
    reach(*check(models, 'llava-7b', 'llava-7b'))
    assert reach.status()['backend_problem'] != ''
    reach(True, ANSWERED, '')  # the server answered for it anyway (it loads models on demand)
    assert reach.status()['backend_problem'] == ''
    reach(*check(models, 'llava-7b', 'llava-7b'))
    assert reach.status() == {'backend_reachable': True, 'backend_checked':
                              'GET /models answered', 'backend_problem': ''}

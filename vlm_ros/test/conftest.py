"""Shared fixtures: an isolated, loopback-only DDS domain and an rclpy node per test module."""

import fcntl
import os
import pathlib
import random
import statistics
import tempfile
import warnings

import pytest
from vlm_ros.compat import loopback_discovery

DOMAINS = range(1, 102)  # the ROS 2 domain ids whose ports stay clear of Linux's ephemeral ones
_claimed = []  # the open lock file of this process's domain: held until the process ends


def _domain_id() -> str:
    """Return this test process's DDS domain: one no other test process on this machine holds.

    Each pytest-xdist worker (and a serial run) claims a random free domain by an exclusive
    lock on a file named after it, held for the process's life: two runs on one machine (a
    developer's and CI's, or two legs) drew the same domain from a run's random base before,
    and each test then got the other run's messages. A serial run keeps a domain the caller
    set.
    """
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    if workers == 1 and 'ROS_DOMAIN_ID' in os.environ:
        return os.environ['ROS_DOMAIN_ID']
    for domain in random.sample(DOMAINS, len(DOMAINS)):
        lock = open(os.path.join(tempfile.gettempdir(), f'vlm_ros-test-domain-{domain}.lock'),
                    'w')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _claimed.append(lock)
        return str(domain)
    raise RuntimeError(f'every ROS domain id {DOMAINS.start}-{DOMAINS.stop - 1} is held by '
                       'another test process on this machine')


# Each test process gets a DDS domain of its own, and discovery stays on this machine:
# concurrent runs (a developer's and CI's) never see each other's topics, and nothing goes onto
# the network.
os.environ['ROS_DOMAIN_ID'] = _domain_id()
for _name, _value in loopback_discovery().items():  # the distro's own variable, not both
    os.environ.setdefault(_name, _value)
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
# One compile cache for every test, worker and leg: torch.compile's kernels depend on the
# graphs, torch and the compiler, not on the weights, so after the first compile of the tiny
# models' decoding step, the others load it (and still compile, in the warm-up). The same
# place as the trained checkpoints (support/model_cache.py), so a fresh clone starts empty.
_ROOT = pathlib.Path(__file__).resolve().parents[2]
os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', str(_ROOT / '.cache' / 'torchinductor'))
# One torch (OpenMP) thread per process. A test run keeps both cores busy (four workers, and
# the nodes and tools they start), and there a process's second thread mostly spins waiting for
# the first: a tiny LLaVA's 256 tokens took 6.3 s with two threads and 0.7 s with one under a
# run's load. Read when torch loads, so set before any test imports it; no test measures time,
# and the README's demo command runs with torch's default (test_demo.py).
os.environ.setdefault('OMP_NUM_THREADS', '1')
# torch.compile's C++ kernels are compiled in the compiling process, not in a pool of one
# worker process per core: beside the run's other processes the pool only adds its start-up
# (the graph-decoding compile of a tiny LLaVA: 41.5 s of CPU with the pool, 35.8 s without).
os.environ.setdefault('TORCHINDUCTOR_COMPILE_THREADS', '1')


def _file_seconds() -> dict:
    """Return durations.txt's seconds per test file (scripts/test-durations writes it)."""
    path = pathlib.Path(__file__).with_name('durations.txt')
    if not path.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines()
             if line and not line.startswith('#'))
    return {name.strip(): float(seconds) for seconds, name in pairs}


def pytest_collection_modifyitems(config, items):
    """Order the test files longest first, for the parallel workers (scripts/test).

    pytest-xdist hands whole files to its workers in this order (with --no-loadscope-reorder):
    a long file that started last would keep one worker busy while the others idle. A file
    durations.txt does not know (new, or under half a second) counts as a median one. Tests
    keep their order in a file.
    """
    seconds = _file_seconds()
    if not seconds:
        return
    median = statistics.median(seconds.values())
    root = pathlib.Path(str(config.rootpath))

    def weight(item) -> float:
        path = pathlib.Path(str(item.path))
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        return -seconds.get(name, median)
    items[:] = sorted(items, key=weight)  # stable: each file's tests stay in order


def pytest_report_header(config):
    """Say which ROS 2 distro this leg of scripts/test runs on."""
    import rclpy
    from vlm_ros.compat import distro

    return (f'ROS 2 {distro()} (rclpy from {os.path.dirname(rclpy.__file__)}), '
            f'ROS_DOMAIN_ID {os.environ["ROS_DOMAIN_ID"]} (each xdist worker holds its own)')


def pytest_terminal_summary(terminalreporter):
    """Print what tests measured (``record_property``): CI logs carry the numbers."""
    reports = [report for outcome in ('passed', 'failed')
               for report in terminalreporter.stats.get(outcome, [])
               if getattr(report, 'when', '') == 'call' and report.user_properties]
    if reports:
        terminalreporter.section('measured')
        for report in reports:
            for name, value in report.user_properties:
                terminalreporter.write_line(f'{report.nodeid}: {name} = {value}')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Add the log of each process a failed test started (stopped_cleanly) to its report.

    A timeout in the test says what did not come; the node's log says why: in a CI log it is
    the only trace of a failure seen once in many runs.
    """
    report = (yield).get_result()
    if report.when != 'call' or not report.failed:
        return
    for index, process in enumerate(getattr(item, 'started_processes', ())):
        log_text = getattr(process, 'log_text', None)
        if log_text is not None:
            report.sections.append((f'log of process {index} (the last 8000 characters)',
                                    log_text()[-8000:]))


@pytest.fixture(scope='session')
def rclpy_context():
    """Initialise rclpy once for the test process, and shut it down cleanly at the end."""
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def test_node(rclpy_context, request):
    """An rclpy node in the test process, spinning on a background thread."""
    from ros_harness import TestNode

    node = TestNode('test_' + request.node.name.split('[')[0][:40])
    yield node
    node.close()


@pytest.fixture(scope='session')
def trained_tiny():
    """Return a factory: family -> directory of a tiny checkpoint trained on the test targets.

    Built and trained once per family (for every worker and leg: model_cache), then loaded
    by path like a real model.
    """
    from engine_fixtures import training_samples
    from model_cache import cached_model

    def get(family: str):
        return cached_model(f'tiny_{family}', (family, training_samples()),
                            lambda folder: _trained(family, folder, training_samples()))

    return get


def _trained(family: str, folder, samples):
    from vlm_ros.models import build_tiny, train_tiny

    out = build_tiny(family, folder / family)
    train_tiny(out, samples)
    return out


@pytest.fixture(scope='session')
def untrained_llava(tmp_path_factory):
    """Return a tiny LLaVA with random weights, whose generations never stop by themselves.

    A generation runs as long as max_new_tokens allows (about 1 ms a token here): long enough
    to signal or deactivate a node in the middle of it. Random weights alone end about one
    prompt in four early (measured), so the end-of-sequence row of the output layer is zeroed:
    its logit is then 0, below the largest of the other 490 random logits. Its positions are
    widened past the node's highest max_new_tokens (4096), where an answer would stop first.
    """
    from engine_fixtures import never_ending, with_positions
    from vlm_ros.models import build_tiny

    model = never_ending(build_tiny('llava', tmp_path_factory.mktemp('untrained_llava')))
    return with_positions(model, 8192)


@pytest.fixture(scope='session')
def own_code_llava(trained_tiny, tmp_path_factory):
    """Return the trained tiny LLaVA as a repository with its own model code (auto_map)."""
    from engine_fixtures import with_own_code

    return with_own_code(trained_tiny('llava'), tmp_path_factory.mktemp('own_code'))


@pytest.fixture(scope='session')
def closed_loop_llava():
    """Return a tiny LLaVA trained on the usual answers and the closed-loop prompts."""
    from engine_fixtures import closed_loop_samples, training_samples
    from model_cache import cached_model

    samples = training_samples() + closed_loop_samples()
    return cached_model('closed_loop_llava', ('llava', samples),
                        lambda folder: _trained('llava', folder, samples))


@pytest.fixture(scope='session')
def hub_home(trained_tiny, tmp_path_factory):
    """Return an offline Hugging Face cache (HF_HOME) holding hub ids of tiny checkpoints.

    'vlm-ros-test/tiny-llava' is the trained LLaVA; the README's default model id holds the
    trained Idefics3 (the architecture and processor of that checkpoint).
    """
    from engine_fixtures import DEFAULT_MODEL, add_to_hub_cache

    home = tmp_path_factory.mktemp('hf_home')
    add_to_hub_cache(home, 'vlm-ros-test/tiny-llava', trained_tiny('llava'))
    add_to_hub_cache(home, DEFAULT_MODEL, trained_tiny('idefics3'))
    return home


def _served(trained_tiny, tmp_path_factory, name: str, copy: bool):
    """Start transformers serve on the trained tiny LLaVA (a copy of it, when copy is set)."""
    import shutil

    from serve_harness import ServedModel

    folder = tmp_path_factory.mktemp(name)
    model = trained_tiny('llava')
    if copy:
        model = shutil.copytree(model, folder / 'llava')
    server = ServedModel(model, folder / 'serve.log')
    server.start()
    return server


@pytest.fixture(scope='session')
def tiny_server(trained_tiny, tmp_path_factory):
    """Serve the trained tiny LLaVA from a real OpenAI-compatible server (transformers serve).

    Shared by the session and never disturbed: tests that stop or break a server use
    fault_server.
    """
    server = _served(trained_tiny, tmp_path_factory, 'tiny_server', copy=False)
    yield server
    server.stop()


@pytest.fixture(scope='session')
def _fault_server_process(trained_tiny, tmp_path_factory):
    server = _served(trained_tiny, tmp_path_factory, 'fault_server', copy=True)
    yield server
    server.stop()


@pytest.fixture
def fault_server(_fault_server_process):
    """Return a second server, which tests may stop, block, kill and break.

    It serves its own copy of the checkpoint; every test gets it running and unblocked.
    """
    _fault_server_process.ensure_running()
    return _fault_server_process


@pytest.fixture
def backend(request):
    """Return the backend of a node test: 'transformers' unless parametrized (both_backends)."""
    return getattr(request, 'param', 'transformers')


@pytest.fixture(scope='session')
def fork_server():
    """Return this worker's fork server (support/fork_server.py); close them all at the end.

    Node processes started in this process's environment are forked from it: the same
    installed script, without paying torch's and transformers' imports each time.
    """
    import fork_server as servers

    server = servers.shared()
    if server.error is not None:
        warnings.warn(f"no fork server ({server.error}): each vlm_node is exec'd",
                      stacklevel=2)
    yield server
    servers.close_all()


@pytest.fixture
def start_vlm_node(test_node, trained_tiny, backend, fork_server, request):
    """Return a starter: params -> a running vlm_node process serving the trained tiny LLaVA.

    A parameter given as None is not passed (the node's default applies); env replaces the
    process environment. In this process's own environment the process is forked from the
    fork server, otherwise exec'd.

    With backend 'openai' the node asks tiny_server, which serves the same checkpoint.
    Every node started is stopped at teardown with SIGINT, and must exit 0 without rclpy's
    abort, so every integration test also checks clean shutdown.
    """
    from fork_server import shared
    from node_harness import VlmNodeProcess
    from ros_harness import stopped_cleanly

    remote = {}
    if backend == 'openai':
        remote = {'backend': 'openai',
                  'base_url': request.getfixturevalue('tiny_server').base_url}

    def start(env=None, ros_args=(), **params):
        params = {'model': str(trained_tiny('llava')), 'device': 'cpu', 'dtype': 'float32',
                  'max_new_tokens': 96, **remote, **params}
        params = {name: value for name, value in params.items() if value is not None}
        server = shared()  # one that imported in this process's current environment
        spawn = server.start if server.serves(env) else None
        return VlmNodeProcess(test_node, env, ros_args, spawn, **params)

    yield from stopped_cleanly(start, request)

"""A script forked from the fork server behaves as the same script exec'd (support/fork_server).

Node tests start vlm_node through it; what they observe of the process must not depend on how
it was started: arguments, working directory, environment, output, exit status and signals.
"""

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import uuid

import pytest
from fork_server import shared
from waiting import wait_until

SCRIPT = """import os, sys, time
print('argv', sys.argv[1:], 'cwd', os.getcwd(), 'env', os.environ.get('FORK_TEST'))
print('path0', sys.path[0] == os.path.dirname(os.path.abspath(__file__)), file=sys.stderr)
if sys.argv[1] == 'wait':
    print('waiting', flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
sys.exit(int(sys.argv[1]))
"""
# The wait is a loop of short sleeps: a SIGINT that lands inside time.sleep before its
# clock_nanosleep starts only marks the signal, and Python raises KeyboardInterrupt when the
# sleep returns. One 60 s sleep then outlasted the test's 30 s wait (about 1 in 400 forked
# starts, where the copy-on-write page faults widen that window; the kernel showed SIGINT
# caught and nothing pending).


@pytest.fixture
def script(tmp_path):
    path = tmp_path / 'probe.py'
    path.write_text(SCRIPT)
    return str(path)


def _both(fork_server, args, act=lambda proc, log: None):
    """Run args exec'd and forked, in the same environment; return both (code, output)."""
    results = []
    for start in (lambda log: subprocess.Popen([sys.executable, *args], stdout=log,
                                               stderr=subprocess.STDOUT),
                  lambda log: fork_server.start(args, log)):
        with tempfile.TemporaryFile('w+') as log:
            proc = start(log)
            act(proc, log)
            try:
                code = proc.wait(30.0)
            except subprocess.TimeoutExpired as exc:  # say whether it ended, unreported
                raise AssertionError(f'{_whereabouts(proc.pid)}; its output: {_read(log)!r}') \
                    from exc
            log.seek(0)
            results.append((code, log.read()))
    return results


def test_a_forked_script_sees_and_gives_what_an_execd_one_does(fork_server, script,
                                                               monkeypatch, tmp_path):
    marker = uuid.uuid4().hex
    monkeypatch.setenv('FORK_TEST', marker)
    monkeypatch.chdir(tmp_path)
    assert not fork_server.serves(None)  # the environment it imported with has changed
    execd, forked = _both(fork_server, [script, '3'])
    assert forked == execd
    assert execd[0] == 3 and f"argv ['3'] cwd {tmp_path} env {marker}" in execd[1]
    assert 'path0 True' in execd[1]


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_ends_a_forked_script_as_it_ends_an_execd_one(fork_server, script, sig):
    def signal_when_waiting(proc, log):
        wait_until(lambda: 'waiting' in _read(log) or proc.poll() is not None, 30.0,
                   'the script to wait')
        assert proc.poll() is None
        proc.send_signal(sig)
    execd, forked = _both(fork_server, [script, 'wait'], signal_when_waiting)
    assert forked[0] == execd[0] == -sig, (execd, forked)
    assert ('KeyboardInterrupt' in forked[1]) == ('KeyboardInterrupt' in execd[1])


def _read(log) -> str:
    return os.pread(log.fileno(), 1 << 16, 0).decode()


def _whereabouts(pid: int) -> str:
    """Say what became of a process that was not seen to end (seen once in CI, under load)."""
    try:
        stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
        wchan = pathlib.Path(f'/proc/{pid}/wchan').read_text()
    except OSError:
        return f'process {pid} is gone, but its end was never reported'
    state = stat.rsplit(')', 1)[1].split()[0]
    return f'process {pid} is still there, state {state}, waiting in {wchan or "-"}'


def test_a_changed_environment_gets_a_server_that_imported_in_it(monkeypatch):
    server = shared()
    assert server.error is None and server.serves(None) and server.serves(dict(os.environ))
    monkeypatch.setenv('HF_HOME', '/elsewhere')  # read by huggingface_hub at import
    assert not server.serves(None)  # its children would not see what they are told
    assert shared() is not server and shared().serves(None)


def test_piped_output_is_what_subprocess_run_captures(fork_server, script):
    execd = subprocess.run([sys.executable, script, '4'], capture_output=True, text=True,
                           timeout=30.0)
    forked = fork_server.run([script, '4'], 30.0)
    assert (forked.returncode, forked.stdout, forked.stderr) == \
        (execd.returncode, execd.stdout, execd.stderr) == (4, execd.stdout, 'path0 True\n')

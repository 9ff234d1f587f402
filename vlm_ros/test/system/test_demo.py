"""The sample recording end to end: offline evaluation with the demo model, and ./scripts/demo."""

import contextlib
import inspect
import json
import os
import pathlib
import re
import signal
import subprocess
import threading

import numpy as np
import pytest
import yaml
from ament_index_python.packages import get_package_prefix
from fork_server import start_tool
from model_cache import cached_model
from node_harness import TIMEOUT
from vlm_ros.bag.node_settings import fetch_parameters
from vlm_ros.bag.storage import PLAN_TYPE, open_bag
from vlm_ros.compat import loopback_discovery
from vlm_ros.demo import model as demo_model
from vlm_ros.demo.tabletop import draw_tabletop
from vlm_ros.eval.screenshot import CHROMIUM, screenshot
from waiting import wait_exit, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[3]
SAMPLE = ROOT / 'samples' / 'tabletop'
REFERENCES = yaml.safe_load((SAMPLE / 'references.yaml').read_text())


@pytest.fixture(scope='module')
def tiny_demo_model(tmp_path_factory):
    """Build the tiny LLaVA that MODEL=tiny ./scripts/demo uses (trained on the references).

    Built once for both legs (model_cache): the demo's own run (demo_run) trains its own.
    """
    bag, references = SAMPLE / 'bag', SAMPLE / 'references.yaml'

    def build(folder):
        report = demo_model.build(folder / 'model', bag, references)
        (folder / 'model' / 'training_report.json').write_text(json.dumps(report))
        return folder / 'model'
    inputs = (demo_model.training_samples(bag, references), inspect.getsource(demo_model))
    out = cached_model('demo_tiny', inputs, build)
    report = json.loads((out / 'training_report.json').read_text())
    assert report['min_answer_prob'] >= 0.5, report
    return out


@pytest.fixture(scope='module')
def sample_eval(tiny_demo_model, tmp_path_factory):
    """Run vlm_eval on the sample bag with the tiny model once; return (its --out, stdout)."""
    out = tmp_path_factory.mktemp('sample_eval') / 'eval'
    vlm_eval = pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros' / 'vlm_eval'
    proc = start_tool([vlm_eval, SAMPLE / 'bag', '--model', tiny_demo_model, '--device', 'cpu',
                       '--dtype', 'float32', '--out', out,
                       '--references', SAMPLE / 'references.yaml'])
    code, stdout, err = wait_exit(proc, 300)
    assert code == 0, err
    return out, stdout


def test_vlm_eval_on_the_sample_bag_with_the_tiny_model(sample_eval, tiny_demo_model):
    out, stdout = sample_eval
    records = [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines()]
    answers = {(r['task'], r['image']['stamp_ns']): r['text'] for r in records
               if r['kind'] == 'result'}
    # Every instruction is answered from the frame its reference names, with the reference.
    assert answers == {(r['task'], r['stamp_ns']): r['target'] for r in REFERENCES}
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['plan_validity_rate'] == 1.0 and summary['requests'] == len(REFERENCES)
    assert summary['mean_ce'] < 0.1 and 1.0 <= summary['mean_perplexity'] < 1.1
    assert 'plan validity rate' in stdout
    # The settings the answers were made under, where not at vlm_node's defaults.
    settings = summary['settings']
    assert settings['source'] == "vlm_eval's EngineConfig", settings
    assert settings['values']['dtype'] == 'float32' and settings['defaults']['dtype'] == 'auto'
    assert settings['values']['model'] == str(tiny_demo_model)
    assert 'max_new_tokens' not in settings['values']  # vlm_eval uses the node's default
    assert summary['ttft_p50_s'] > 0 and summary['tokens_per_s_p50'] > 0, summary


@pytest.mark.skipif(not pathlib.Path(CHROMIUM).is_file(),
                    reason=f'no {CHROMIUM}: run scripts/install-test-deps to install chromium')
def test_the_sample_evaluations_report_shows_the_tabletop_thumbnails(sample_eval, tmp_path):
    """The HTML report, rendered by a browser: varied pixels, and the sample's table in them."""
    from PIL import Image

    out, _ = sample_eval
    png = screenshot(out / 'report.html', tmp_path / 'report.png', height=1800)
    pixels = np.asarray(Image.open(png).convert('RGB')).reshape(-1, 3).astype(np.int16)
    assert len(np.unique(pixels, axis=0)) > 500
    wood = draw_tabletop(0.0)[440, 20].astype(np.int16)  # the table, near its front edge
    near = np.all(np.abs(pixels - wood) <= 24, axis=1).sum()
    assert near > 4 * 2000, f'the tabletop thumbnails are missing: {near} wood pixels'


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """Run MODEL=tiny ./scripts/demo once; return (OUT, stdout, summary)."""
    out = tmp_path_factory.mktemp('demo') / 'out'
    env = {**os.environ, 'MODEL': 'tiny', 'OUT': str(out), 'DEVICE': 'cpu'}
    code, stdout, err = run_demo(env)
    assert code == 0, err[-3000:]
    return out, stdout, json.loads((out / 'report' / 'summary.json').read_text())


def start_demo(env: dict) -> subprocess.Popen:
    """Start ./scripts/demo as the README writes it, from the repository root, in its own group.

    With torch's default threads, not the one thread conftest.py gives the test run.
    """
    env = {name: value for name, value in env.items() if name != 'OMP_NUM_THREADS'}
    # exec: the shell becomes the demo, whose exit status a terminal's shell would show.
    return subprocess.Popen('exec ./scripts/demo', shell=True, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def run_demo(env: dict, timeout: float = 600) -> tuple:
    """Run ./scripts/demo to its end; return (exit code, stdout, stderr)."""
    proc = start_demo(env)
    try:
        return wait_exit(proc, timeout)
    finally:
        end_group(proc)


def end_group(proc: subprocess.Popen) -> None:
    """Kill what is left of the demo's process group: a failed test leaves no node running."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def test_demo_command_runs_offline_with_model_tiny(demo_run):
    out, stdout, summary = demo_run
    assert stdout.count('[/plan] STATUS_OK') == 4, stdout
    with open_bag(out / 'answers') as reader:
        plans = [c for c, _, _ in reader.messages() if c.msgtype == PLAN_TYPE]
    assert len(plans) == 4
    assert summary['plan_validity_rate'] == 1.0
    # The scripted head fails the second step once: the first instruction is re-planned, and
    # its execution resumes from the failed step to DONE.
    first = summary['plan_executions'][0]
    assert first['instruction'] == REFERENCES[0]['text'], first
    assert first['outcome'] == 'DONE' and len(first['replans']) == 1, first
    assert [(s['attempt'], s['instruction']) for s in first['steps']] == [
        (0, 'pick up the red block'), (0, 'place it in the bin'), (1, 'place it in the bin')]
    assert summary['replans'] == 1 and summary['executions'].get('DONE', 0) >= 1, summary
    assert 'Plan executions' in (out / 'report' / 'report.html').read_text()
    assert (out / 'report' / 'report.html').is_file()
    assert (out / 'report' / 'report.png').is_file() == pathlib.Path(CHROMIUM).is_file()
    assert not (out / 'partial').exists()


def test_demo_report_shows_steps_answer_speeds_and_node_settings(demo_run):
    out, _, summary = demo_run
    first = summary['plan_executions'][0]
    # Each step's outcome, why it failed, and how long it took, from the recorded progress.
    assert [s['outcome'] for s in first['steps']] == ['succeeded', 'failed', 'succeeded']
    failed = first['steps'][1]
    assert failed['reason'] == \
        "step 2 ('place it in the bin') failed: the script says this step fails", failed
    assert all(s['time_s'] > 0 for s in first['steps']), first
    # The node's own parameters, recorded beside its answers, where not at their defaults.
    assert json.loads((out / 'answers' / 'settings.json').read_text())['node'] == '/vlm_node'
    settings = summary['settings']
    assert settings['source'] == 'parameters of /vlm_node', settings
    assert settings['values'] == {
        'model': str(out / 'tiny_model'), 'device': 'cpu', 'caption_rate': 0.5,
        'execute_plans': True, 'processor_kwargs': '{"do_image_splitting": false}'}, settings
    assert settings['defaults']['execute_plans'] is False
    assert summary['device'] == 'cpu (live vlm_node)'
    records = [json.loads(line) for line in
               (out / 'report' / 'results.jsonl').read_text().splitlines()]
    plans = [r for r in records if r['kind'] == 'result' and r['task'] == 'plan']
    assert all(r['time_to_first_token'] > 0 and r['tokens_per_s'] > 0 for r in plans), plans
    page = (out / 'report' / 'report.html').read_text()
    assert page.count('&#10007; failed</span>') == 1
    assert 'failed: the script says this step fails</div>' in page
    assert re.search(r'place it in the bin <span class="step failed">&#10007; failed</span> '
                     r'<span class="meta">in \d+\.\d{3} s</span>', page)
    assert page.count('TTFT ') == len(plans) and page.count(' tokens/s') == len(plans)
    assert '<tr><th>execute_plans</th><td>True</td><td>False</td></tr>' in page


def test_a_failed_demo_run_keeps_the_previous_report(demo_run, tmp_path):
    out, _, _ = demo_run
    before = {p: p.read_bytes() for p in (out / 'report').iterdir()}
    missing = tmp_path / 'no_model'
    env = {**os.environ, 'MODEL': str(missing), 'OUT': str(out), 'DEVICE': 'cpu'}
    code, _, err = run_demo(env)
    assert code != 0, err[-3000:]
    assert {p: p.read_bytes() for p in (out / 'report').iterdir()} == before
    assert (out / 'answers' / 'metadata.yaml').is_file()
    last = err.strip().splitlines()[-1]
    assert last.startswith('demo: failed') and f'{out}/partial' in last, err[-3000:]
    assert f"model directory '{missing}' does not exist" in \
        (out / 'partial' / 'node.log').read_text()
    assert 'MODEL=tiny' not in err  # the hint is for a hub model that cannot be had offline


def test_a_head_setting_refused_ends_the_demo_with_the_heads_reason(demo_run):
    """STEP_TIME=1 is an integer to rcl: the head refuses it, and the demo says so at once."""
    code, _, err = run_demo({**os.environ, 'MODEL': 'tiny', 'OUT': str(demo_run[0]),
                             'DEVICE': 'cpu', 'STEP_TIME': '1'})
    assert code == 1 and 'demo: scripted_vla_head could not start' in err, err[-3000:]
    assert '(a double is written with a decimal point: 1.0, not 1)' in err, err[-3000:]


def test_ctrl_c_during_the_replay_says_where_the_partial_output_is(demo_run, test_node):
    """Ctrl-C in a terminal signals the demo's whole process group, as killpg does here.

    This run's node, head and replay take the demo's other settings: each reaches its process.
    The discovery range is left to the demo, which keeps it on this machine.
    """
    out, _, _ = demo_run
    before = {p: p.read_bytes() for p in (out / 'report').iterdir()}
    env = {**os.environ, 'MODEL': 'tiny', 'OUT': str(out), 'DEVICE': 'cpu', 'RATE': '0.01',
           'CAPTION_RATE': '0.25', 'EXECUTE': 'false', 'PROCESSOR_KWARGS': '',
           'HEAD_SCRIPT': 'fail,succeed', 'STEP_TIME': '0.05', 'LOAD_TIMEOUT': '77'}
    for name in loopback_discovery():  # the distro's variable: a range, or localhost only
        env.pop(name)
    proc = start_demo(env)
    try:
        settings = out / 'partial' / 'answers' / 'settings.json'  # the node's, once it answers
        wait_until(settings.is_file, 300, "the demo's vlm_node to be active and answering")
        node = {name: value for name, value in
                json.loads(settings.read_text())['parameters'].items()
                if name in ('caption_rate', 'execute_plans', 'processor_kwargs')}
        assert node == {'caption_rate': 0.25, 'execute_plans': False, 'processor_kwargs': ''}
        head = fetch_parameters(test_node.node, '/scripted_vla_head', TIMEOUT,
                                threading.Event())
        assert (head['script'], head['step_time']) == ('fail,succeed', 0.05), head
        discovery, _ = process_of(proc.pid, 'vlm_node')
        assert {name: discovery.get(name) for name in loopback_discovery()} == \
            loopback_discovery()
        _, replay = process_of(proc.pid, 'vlm_replay')
        assert ' --rate 0.01 ' in replay and ' --wait-for-subscribers 77 ' in replay, replay
        os.killpg(proc.pid, signal.SIGINT)
        code, _, err = wait_exit(proc, 120)
    finally:
        end_group(proc)
    assert code == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('demo: failed (exit 130)') and f'{out}/partial' in last, err[-3000:]
    assert {p: p.read_bytes() for p in (out / 'report').iterdir()} == before
    assert 'vlm_replay: played' in err and 'interrupted' in err, err[-3000:]


def process_of(group: int, program: str) -> tuple:
    """Return (environment, command line) of a process of the group whose command names program.

    The command line's words are joined by spaces, with one at each end.
    """
    for entry in pathlib.Path('/proc').iterdir():
        try:
            if not entry.name.isdigit() or os.getpgid(int(entry.name)) != group:
                continue
            command = (entry / 'cmdline').read_bytes().decode(errors='replace').split('\0')
            if program not in ' '.join(command):
                continue
            variables = (entry / 'environ').read_bytes().decode(errors='replace').split('\0')
        except OSError:  # ended meanwhile
            continue
        return (dict(item.split('=', 1) for item in variables if '=' in item),
                f" {' '.join(command)} ")
    raise AssertionError(f'no process of group {group} runs {program}')


@pytest.mark.parametrize('missing', ['BAG', 'REFERENCES'])
def test_a_recording_or_references_file_that_is_not_there_is_named(missing, demo_run, tmp_path):
    """BAG is replayed into the node, REFERENCES trains MODEL=tiny (where OUT has none yet)."""
    out = demo_run[0] if missing == 'BAG' else tmp_path / 'demo'
    path = tmp_path / f'no_{missing.lower()}'
    code, _, err = run_demo({**os.environ, 'MODEL': 'tiny', 'OUT': str(out), 'DEVICE': 'cpu',
                             missing: str(path)})
    said = {'BAG': f'vlm_replay: no recording at {path}',
            'REFERENCES': f'python -m vlm_ros.demo.model: error: {path}: cannot read the '
                          'references file'}
    assert code == 2 and said[missing] in err and 'Traceback' not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith('demo: failed (exit 2)'), err[-3000:]


def test_demo_default_model_offline_and_not_cached_says_to_use_model_tiny(tmp_path):
    """./scripts/demo exactly as the README writes it, on a machine without network."""
    hf_home = tmp_path / 'hf_home'
    hf_home.mkdir()
    env = {**os.environ, 'HF_HOME': str(hf_home), 'HF_HUB_OFFLINE': '1',
           'OUT': str(tmp_path / 'demo')}
    for name in ('MODEL', 'DEVICE'):
        env.pop(name, None)
    code, _, err = run_demo(env)
    assert code != 0
    assert err.strip().splitlines()[-1] == (
        'demo: HuggingFaceTB/SmolVLM-256M-Instruct is not in the Hugging Face cache and cannot '
        'be downloaded here; run the demo offline with: MODEL=tiny ./scripts/demo'), err[-3000:]
    assert not (tmp_path / 'demo' / 'report').exists()

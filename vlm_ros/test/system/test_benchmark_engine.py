"""vlm_benchmark's engine modes run and print their tables (numbers: docs/BENCHMARKS.md).

The engine modes use no ROS (the tool imports none of it there), so they run on the first leg
of scripts/test only; the --node mode is in test_benchmark_tool.py.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
from fork_server import run_tool, start_tool
from waiting import wait_exit

pytestmark = pytest.mark.distro_independent
BENCHMARK = shutil.which('vlm_benchmark')  # scripts/with-env puts the install space on PATH
assert BENCHMARK, 'vlm_benchmark is not on PATH: run the tests through scripts/with-env'


def test_engine_mode_compiles_before_it_measures():
    proc = subprocess.Popen([BENCHMARK, '--random', 'tiny:llava',
                             '--device', 'cpu', '--decode-mode', 'compiled', '--batch-sizes', '1',
                             '2', '--new-tokens', '4', '--repeats', '1', '--image', '48x64'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    assert f"CPU threads {os.environ['OMP_NUM_THREADS']}," in stdout, stdout  # conftest's
    warm_up = re.search(r'decode compiled \(warm-up ([0-9.]+) s\)', stdout)
    assert warm_up and float(warm_up.group(1)) > 0, stdout
    rows = [line.split('|') for line in stdout.splitlines() if line.startswith('| ') and
            line.split('|')[1].strip().isdigit()]
    assert [row[1].strip() for row in rows] == ['1', '2'], stdout
    for row in rows:  # TTFT = preprocess + vision encoder + prefill + first token
        parts = [float(part) for part in row[4].split('+')]
        assert len(parts) == 4 and abs(sum(parts) - float(row[3])) < 0.2 + 0.02 * sum(parts), row
        assert row[10].strip() == '0', f'recompiled in steady state: {row}'


def test_engine_mode_times_each_frames_kind_as_the_options_load_and_run_the_model():
    proc = start_tool([BENCHMARK, '--random', 'tiny:idefics3',
                       '--device', 'cpu', '--batch-sizes', '3', '--new-tokens', '2',
                       '--repeats', '2', '--image', '48x64', '--frames', 'distinct', 'shared',
                       'queued', '--cpu-threads', '3', '--dtype', 'bfloat16', '--attn', 'eager',
                       '--profile'])
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    titles = [line for line in stdout.splitlines() if line.startswith('### tiny:idefics3')]
    assert [t.split(', ')[-2] for t in titles] == ['distinct frames', 'shared frames',
                                                   'queued frames'], stdout
    # Each as measured, not as asked: the weights' dtype and attention as loaded (defaults:
    # float32, sdpa), torch's threads while timing (conftest's 1), the frames timed (480x640)
    # and the runs each median is of (3).
    for title in titles:
        assert ' M params, cpu bfloat16, CPU threads 3, attn eager, ' in title, title
        assert ', median of 2 runs, 64x48 image, ' in title, title
    profile = stdout[stdout.index('### profile of one request, batch 1, 2 tokens, host time'):]
    assert 'aten::' in profile, stdout  # torch.profiler's operators



def test_a_reader_that_has_gone_ends_the_benchmark_with_exit_0():
    """`vlm_benchmark ... | head`: once the reader has its lines, the benchmark stops, exit 0."""
    proc = subprocess.Popen([BENCHMARK, '--random', 'tiny:llava', '--device', 'cpu',
                             '--batch-sizes', '1', '--new-tokens', '2', '--repeats', '1',
                             '--image', '48x64', '--frames', 'distinct', 'shared', 'queued'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # the first table's title
        proc.stdout.close()
        code = proc.wait(600)  # at the second table, which it cannot print
    finally:
        proc.kill()
    said = proc.stderr.read()
    assert first.startswith('### tiny:llava: ') and ', distinct frames, load ' in first, first
    assert code == 0 and 'rror' not in said and 'Traceback' not in said, said[-3000:]

def test_constraint_cost_times_free_and_constrained_decoding_side_by_side():
    proc = start_tool([BENCHMARK, '--random', 'tiny:llava', '--device',
                       'cpu', '--batch-sizes', '1', '2', '--new-tokens', '32', '--repeats', '1',
                       '--image', '48x64', '--skills', 'stow_q7', 'lift_k3',
                       '--constraint-cost'])
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    table = stdout[stdout.index('plan grammar cost per decoding step, cpu, 32 tokens, median '
                                'of 1 pair'):]
    rows = [[cell.strip() for cell in line.split('|')[1:-1]] for line in table.splitlines()
            if line.startswith('| ') and line.split('|')[1].strip().isdigit()]
    assert [row[0] for row in rows] == ['1', '2'], stdout
    # Random weights never end a plan: the grammar closes each at its last token (closing.py),
    # so every row-step was constrained, and each plan's step names one of --skills (without
    # them, its skill would be free text, closed as '').
    assert all(float(row[1]) > 0 and float(row[2]) > 0 and row[4] == '100%' for row in rows), \
        stdout
    assert all(row[6] != '-' and set(row[6].split(', ')) <= {'stow_q7', 'lift_k3'}
               for row in rows), stdout
    # One repeat: the cost is that pair's ratio (the printed times are rounded to 0.01 ms)
    assert all(abs(float(row[3].rstrip('%')) - 100 * (float(row[2]) / float(row[1]) - 1)) < 2
               for row in rows), stdout


@pytest.mark.parametrize('options, refused', [
    (['--streams', '3', '--requests', '2', '--batch-wait', '0.1', '--skills', 'pick'],
     '--streams, --requests, --batch-wait: no effect without --node; --skills: no effect '
     'without --constraint-cost: the other tables time free decoding'),
    (['--constrain-plans', 'on'], '--constrain-plans: no effect without --constraint-cost'),
    (['--node', '--frames', 'shared', '--repeats', '2', '--attn', 'eager', '--profile',
      '--constraint-cost', '--constrain-plans', 'on', '--skills', 'pick'],
     '--frames, --repeats, --attn, --profile, --constraint-cost, --constrain-plans, --skills: '
     'no effect with --node: its vlm_node plans under its own constrain_plans and skills'),
])
def test_options_that_change_nothing_in_the_mode_chosen_are_refused(options, refused):
    done = run_tool([BENCHMARK, '--random', 'tiny:llava', *options], timeout=120)
    assert done.returncode == 2 and f'vlm_benchmark: error: {refused}' in done.stderr, \
        done.stderr
    assert not done.stdout  # refused before any model was built or node started


def test_features_cost_times_plans_with_and_without_features():
    done = subprocess.run([sys.executable, '-m', 'vlm_ros.benchmarks.features_cost', '--random',
                           'tiny:llava', '--batch-sizes', '1', '2', '--repeats', '1',
                           '--new-tokens', '4'], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [[cell.strip() for cell in line.split('|')[1:-1]] for line in done.stdout.splitlines()
            if line.startswith('| ') and line.split('|')[1].strip().isdigit()]
    assert [(row[0], row[1]) for row in rows] == [
        (batch, pooling) for batch in ('1', '2') for pooling in ('last', 'mean', 'tokens')]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 and row[4].endswith('%')
               for row in rows), done.stdout

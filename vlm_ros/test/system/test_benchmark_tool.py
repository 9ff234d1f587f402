"""vlm_benchmark's modes run and print their tables (the numbers are in docs/BENCHMARKS.md)."""

import re
import subprocess

from fork_server import start_tool
from node_harness import node_executable
from ros_harness import wait_exit


def test_node_mode_drives_a_vlm_node_at_each_batch_size(rclpy_context):
    proc = start_tool([node_executable('vlm_benchmark'), '--node', '--random', 'tiny:llava',
                       '--device', 'cpu', '--streams', '3', '--requests', '2', '--batch-sizes',
                       '1', '3', '--new-tokens', '4', '--image', '48x64', '--decode-mode',
                       'static', '--processor-kwargs', '{"truncation": false}'])
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    rows = [line.split('|') for line in stdout.splitlines() if line.startswith('| ') and
            line.split('|')[1].strip().isdigit()]
    assert [row[1].strip() for row in rows] == ['1', '3'], stdout
    assert all(int(row[3]) + int(row[4]) == 6 for row in rows), stdout  # 3 streams x 2 each
    assert 'concurrent instruction streams' in stdout
    assert 'static decoding' in stdout  # what the node reported, from --decode-mode
    assert 'DDS profile fastdds_large_frames.xml' in stdout  # raw frames over shared memory


def test_engine_mode_compiles_before_it_measures():
    proc = subprocess.Popen([node_executable('vlm_benchmark'), '--random', 'tiny:llava',
                             '--device', 'cpu', '--decode-mode', 'compiled', '--batch-sizes', '1',
                             '2', '--new-tokens', '4', '--repeats', '1', '--image', '48x64'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    warm_up = re.search(r'decode compiled \(warm-up ([0-9.]+) s\)', stdout)
    assert warm_up and float(warm_up.group(1)) > 0, stdout
    rows = [line.split('|') for line in stdout.splitlines() if line.startswith('| ') and
            line.split('|')[1].strip().isdigit()]
    assert [row[1].strip() for row in rows] == ['1', '2'], stdout


def test_engine_mode_times_distinct_shared_and_queued_frames():
    proc = start_tool([node_executable('vlm_benchmark'), '--random', 'tiny:idefics3',
                       '--device', 'cpu', '--batch-sizes', '3', '--new-tokens', '2',
                       '--repeats', '1', '--image', '48x64', '--frames', 'distinct', 'shared',
                       'queued'])
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    titles = [line for line in stdout.splitlines() if line.startswith('### ')]
    assert [t.split(', ')[-2] for t in titles] == ['distinct frames', 'shared frames',
                                                   'queued frames'], stdout


def test_constraint_cost_times_free_and_constrained_decoding_side_by_side():
    proc = start_tool([node_executable('vlm_benchmark'), '--random', 'tiny:llava', '--device',
                       'cpu', '--batch-sizes', '1', '2', '--new-tokens', '8', '--repeats', '1',
                       '--image', '48x64', '--skills', 'pick', 'place', '--constraint-cost'])
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    table = stdout[stdout.index('plan grammar cost per decoding step'):]
    rows = [[cell.strip() for cell in line.split('|')[1:-1]] for line in table.splitlines()
            if line.startswith('| ') and line.split('|')[1].strip().isdigit()]
    assert [row[0] for row in rows] == ['1', '2'], stdout
    # Random weights never finish a plan in 8 tokens: every row-step was constrained.
    assert all(float(row[1]) > 0 and float(row[2]) > 0 and row[4] == '100%' for row in rows), \
        stdout

"""vlm_benchmark's modes run and print their tables (the numbers are in docs/BENCHMARKS.md)."""

import subprocess

from node_harness import node_executable
from ros_harness import wait_exit


def test_node_mode_drives_a_vlm_node_at_each_batch_size(rclpy_context):
    proc = subprocess.Popen([node_executable('vlm_benchmark'), '--node', '--random',
                             'tiny:llava', '--device', 'cpu', '--streams', '3', '--requests',
                             '2', '--batch-sizes', '1', '3', '--new-tokens', '4', '--image',
                             '48x64'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    rows = [line.split('|') for line in stdout.splitlines() if line.startswith('| ') and
            line.split('|')[1].strip().isdigit()]
    assert [row[1].strip() for row in rows] == ['1', '3'], stdout
    assert all(int(row[3]) + int(row[4]) == 6 for row in rows), stdout  # 3 streams x 2 each
    assert 'concurrent instruction streams' in stdout

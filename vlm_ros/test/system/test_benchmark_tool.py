"""vlm_benchmark --node drives a vlm_node and prints its table (engine modes: elsewhere).

The engine modes, which use no ROS, are in test_benchmark_engine.py.
"""

from fork_server import start_tool
from node_harness import node_executable
from waiting import wait_exit


def test_node_mode_drives_a_vlm_node_at_each_batch_size(rclpy_context):
    proc = start_tool([node_executable('vlm_benchmark'), '--node', '--random', 'tiny:llava',
                       '--device', 'cpu', '--streams', '3', '--requests', '2', '--batch-sizes',
                       '1', '3', '--new-tokens', '4', '--image', '48x64', '--decode-mode',
                       'static', '--processor-kwargs', '{"truncation": false}', '--batch-wait',
                       '0.0125', '--cpu-threads', '2'])
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    rows = [line.split('|') for line in stdout.splitlines() if line.startswith('| ') and
            line.split('|')[1].strip().isdigit()]
    assert [row[1].strip() for row in rows] == ['1', '3'], stdout
    assert all(int(row[3]) + int(row[4]) == 6 for row in rows), stdout  # 3 streams x 2 each
    assert ': 3 concurrent instruction streams x 2 each, 4 new tokens max,' in stdout, stdout
    # What the node reported, from --decode-mode and --cpu-threads (its default here:
    # conftest's OMP_NUM_THREADS, 1), and its batch_wait and processor_kwargs as it has them.
    assert 'static decoding, 2 CPU threads, processor {"truncation": false},' in stdout, stdout
    assert 'batch_wait 0.0125 s,' in stdout, stdout
    assert 'DDS profile fastdds_large_frames.xml' in stdout  # raw frames over shared memory

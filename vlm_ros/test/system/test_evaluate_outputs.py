"""What vlm_eval leaves in --out when it cannot finish: an earlier report whole, never a mix.

A user reruns into the folder of an earlier report; a run that is refused, or that fails while
writing, must leave that report as it was, not this run's results beside that run's page.
The installed executable on the vlm_eval tests' recordings (support/eval_bags.py); answers
come from a recording (--recorded), so no model runs.
"""

import os
import pathlib
import subprocess

import vlm_ros.bag.storage as bags
from ament_index_python.packages import get_package_prefix
from eval_bags import IMAGE_TOPIC, INSTRUCTION_TOPIC, write_input_bag, write_recorded_bag
from fork_server import run_tool

OUTPUTS = ('results.jsonl', 'summary.json', 'latency.png', 'report.html')
EXE = pathlib.Path(get_package_prefix('vlm_ros'), 'lib', 'vlm_ros', 'vlm_eval')


def earlier_report(out: pathlib.Path, run: str) -> dict:
    """Fill out with the four files of an earlier run; return {name: bytes}."""
    out.mkdir()
    files = {name: f'{run}: the earlier {name}\n'.encode() for name in OUTPUTS}
    for name, data in files.items():
        (out / name).write_bytes(data)
    return files


def folder(out: pathlib.Path) -> dict:
    return {path.name: path.read_bytes() if path.is_file() else None for path in out.iterdir()}


def test_a_recording_with_nothing_to_evaluate_is_refused_before_anything_is_written(tmp_path):
    """Topics but no messages: one line, exit 2, before a model loads; --out as it was."""
    with bags.bag_writer(tmp_path / 'bag') as writer:
        bags.add_topic(writer, IMAGE_TOPIC, 'sensor_msgs/msg/Image')
        bags.add_topic(writer, INSTRUCTION_TOPIC, bags.STRING_TYPE)
    out = tmp_path / 'out'
    earlier = earlier_report(out, 'monday run 7f3a')
    done = run_tool([EXE, tmp_path / 'bag', '--model', tmp_path / 'never-loaded', '--out', out],
                    600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f'vlm_eval: error: nothing to evaluate: {tmp_path / "bag"} holds no instruction on '
        f'{INSTRUCTION_TOPIC} (0 frames on {IMAGE_TOPIC}); ask some with --instruction or '
        '--instructions, or give --references to score']
    assert folder(out) == earlier


def test_a_run_that_fails_while_writing_leaves_the_earlier_report_whole(tmp_path):
    """A file limit between the small outputs' sizes and the page's: writing the page fails.

    As a full disk would; the earlier report stays, and nothing of this run is left in --out.
    """
    args = [write_input_bag(tmp_path / 'input'), '--recorded',
            write_recorded_bag(tmp_path / 'answers')]
    whole = run_tool([EXE, *args, '--out', tmp_path / 'whole'], 600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    sizes = sorted((len(data), name) for name, data in folder(tmp_path / 'whole').items())
    assert sizes[-1][1] == 'report.html' and sizes[-2][0] < sizes[-1][0] - 4096, sizes
    limit_kib = (sizes[-2][0] + sizes[-1][0]) // 2 // 1024
    out = tmp_path / 'out'
    earlier = earlier_report(out, 'tuesday run 51c9')
    done = subprocess.run(['bash', '-c', f'ulimit -f {limit_kib} && exec "$@"', 'vlm_eval', EXE,
                           *args, '--out', out], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == ['vlm_eval: error: [Errno 27] File too large']
    assert folder(out) == earlier


def test_a_reader_that_has_gone_changes_neither_the_exit_status_nor_the_report(tmp_path):
    """`vlm_eval ... | head -0`: the table has no reader; the report is written all the same."""
    args = [write_input_bag(tmp_path / 'input'), '--recorded',
            write_recorded_bag(tmp_path / 'answers')]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader ended before vlm_eval printed its table
    try:
        done = subprocess.run([EXE, *args, '--out', tmp_path / 'out'], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and 'rror' not in done.stderr, done.stderr[-3000:]
    assert sorted(folder(tmp_path / 'out')) == sorted(OUTPUTS)

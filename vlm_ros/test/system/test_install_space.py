"""The suite runs against the colcon install space, and the repository has one version number."""

import os
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_colcon_lists_both_packages():
    out = subprocess.run(['colcon', 'list'], cwd=REPO, capture_output=True, text=True,
                         env=os.environ.copy(), check=True).stdout
    rows = {tuple(line.split('\t')[::2]) for line in out.splitlines()}
    assert ('vlm_ros', '(ros.ament_python)') in rows, out
    assert ('vlm_ros_msgs', '(ros.ament_cmake)') in rows, out

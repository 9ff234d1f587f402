"""Lint is part of the test suite: ruff with the repository's ruff.toml (99 cols, pep257)."""

import pathlib
import shutil
import subprocess

import pytest

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_ruff_clean():
    ruff = shutil.which('ruff')
    assert ruff, 'ruff is not installed (scripts/bootstrap installs it)'
    result = subprocess.run([ruff, 'check', '--config', str(REPO / 'ruff.toml'), '--no-cache',
                             str(REPO / 'vlm_ros'), str(REPO / 'scripts')],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

"""The unit tier: what a developer runs on each edit (``scripts/test --unit``).

A unit test starts no process, joins no DDS domain and trains no model; this conftest makes
each of those fail the test that tries it, so a slow test cannot slip into the quick tier.
Such tests belong in ``system/``.
"""

import subprocess

import pytest


def _refuse(what: str):
    def refuse(*_args, **_kwargs):
        raise AssertionError(f'a unit test {what}: move it to vlm_ros/test/system')
    return refuse


@pytest.fixture(scope='session', autouse=True)
def font_list():
    """Let matplotlib list the machine's fonts, before the limits: once per machine, by fc-list.

    It runs fc-list (a process) the first time it loads on a machine and keeps the list, so
    the report's drawing tests failed where nothing had drawn before: a fresh clone's first
    ``scripts/test --unit``.
    """
    from matplotlib import font_manager

    return font_manager.fontManager


@pytest.fixture(autouse=True)
def unit_tier_limits(monkeypatch):
    """Refuse child processes, rclpy.init and backward passes for the test's duration."""
    import rclpy
    import torch

    monkeypatch.setattr(subprocess.Popen, '_execute_child', _refuse('starts no process'))
    monkeypatch.setattr(rclpy, 'init', _refuse('joins no DDS domain'))
    monkeypatch.setattr(torch.Tensor, 'backward', _refuse('trains no model'))

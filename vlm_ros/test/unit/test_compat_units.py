"""compat: the distro differences, on the distro this leg of scripts/test runs."""

import os

from vlm_ros.compat import distro


def test_the_distro_is_the_one_these_wheels_are_for():
    # A sourced distro names itself; PyPI wheels are the ROS_WHEELS distro (Kilted by default).
    assert distro() == (os.environ.get('ROS_DISTRO') or os.environ.get('ROS_WHEELS', 'kilted'))

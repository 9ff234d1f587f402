"""The suite runs against the colcon install space, and the repository has one version number."""

import os
import pathlib
import xml.etree.ElementTree as ElementTree

import vlm_ros
import vlm_ros_msgs

REPO = pathlib.Path(__file__).resolve().parents[3]


def _under(path: str, folder: pathlib.Path) -> bool:
    return pathlib.Path(path).resolve().is_relative_to(folder.resolve())


def test_packages_come_from_install_space():
    distro = os.environ.get('ROS_WHEELS', 'kilted')  # scripts/wheels-distro's layout
    install = REPO / ('install' if distro == 'kilted' else f'install-{distro}')
    assert _under(vlm_ros.__file__, install), vlm_ros.__file__
    assert _under(vlm_ros_msgs.__file__, install), vlm_ros_msgs.__file__


def test_one_version_everywhere():
    versions = {ElementTree.parse(REPO / pkg / 'package.xml').findtext('version')
                for pkg in ('vlm_ros', 'vlm_ros_msgs')}
    versions.add(vlm_ros.__version__)
    assert len(versions) == 1, versions

"""The DDS transport of every vlm_ros process: large frames, unless the user chose one.

Before ``rclpy.init`` (spin.py) every vlm_ros process takes the large-frames Fast DDS profile
(config/fastdds_large_frames.xml) unless the user chose a transport (large_frames_transport):
with Fast DDS's default 512 KB shared-memory segments, larger frames go out as fragmented UDP,
and a best-effort subscriber on this machine (vlm_node's camera input) got 1 to 2 of 50 such
frames a publisher sent at 10 Hz; with the profile on the publisher, all 50.
"""

import os

from .compat import distro

PROFILE = 'fastdds_large_frames.xml'  # in share/vlm_ros/config
FAST_DDS = ('rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp')
# A profiles file Fast DDS reads by itself: one named by either variable (Fast DDS 3 reads the
# FASTDDS_ one, Fast DDS 2 the FASTRTPS_ one), or the default file in the working directory.
PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
DEFAULT_PROFILE_FILES = ('DEFAULT_FASTDDS_PROFILES.xml', 'DEFAULT_FASTRTPS_PROFILES.xml')


def profile_variable() -> str:
    """Name the profiles variable this distro's Fast DDS reads: each version ignores the other."""
    fast_dds_2 = distro() in ('humble', 'iron', 'jazzy')
    return PROFILE_VARIABLES[1] if fast_dds_2 else PROFILE_VARIABLES[0]


def large_frames_profile() -> str:
    """Return the installed large-frames profile's path ('' when vlm_ros is not installed)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return os.path.join(get_package_share_directory('vlm_ros'), 'config', PROFILE)
    except (PackageNotFoundError, ValueError):
        return ''


def large_frames_transport(environ=os.environ, cwd: str = '.') -> str:
    """Give this process (and its children) the large-frames profile unless a transport is chosen.

    Chosen means: another RMW than Fast DDS, a profiles variable set (even empty: the way to
    keep Fast DDS's built-in transports), or a default profiles file in the working directory.
    Must run before ``rclpy.init``: Fast DDS reads the variable when the first participant is
    created. Return what the process uses, in words, for the log.
    """
    rmw = environ.get('RMW_IMPLEMENTATION') or 'rmw_fastrtps_cpp'  # the distros' default
    if rmw not in FAST_DDS:
        return f'{rmw} with its own transports'
    for name in PROFILE_VARIABLES:
        if name in environ:
            return f"DDS profile {os.path.basename(environ[name]) or 'none'} ({name}, the user's)"
    for name in DEFAULT_PROFILE_FILES:
        if os.path.isfile(os.path.join(cwd, name)):
            return f'DDS profile {name} (in the working directory)'
    path = large_frames_profile()
    if not path or not os.path.isfile(path):
        return f"Fast DDS's default transports ({PROFILE} is not installed)"
    environ[profile_variable()] = path
    return f'DDS profile {PROFILE} (via {profile_variable()})'

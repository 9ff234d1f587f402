"""vlm_ros: vision-language models on ROS 2 camera streams, for VLA policies downstream."""

from importlib import metadata

try:
    __version__ = metadata.version('vlm_ros')
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = '0+unknown'

#!/usr/bin/env python3
"""Make a venv holding ROS 2 PyPI wheels usable as an ament prefix for colcon builds.

The wheels' exported CMake files hard-code the Python and numpy include directories of the
machine that built them (/opt/python/cp311-cp311/...), so rosidl's Python generator fails to
compile anywhere else. This rewrites them to this interpreter's directories, and writes the
local_setup.{sh,bash} files a colcon workspace sources from its parent prefixes.
Running it twice changes nothing.
"""

import pathlib
import sys
import sysconfig

import numpy

BUILD_PYTHON = '/opt/python/cp311-cp311'
BUILD_NUMPY = BUILD_PYTHON + '/lib/python3.11/site-packages/numpy/_core/include'
BUILD_INCLUDE = BUILD_PYTHON + '/include/python3.11'

LOCAL_SETUP = """\
# Written by scripts/fix_wheel_cmake.py: this venv is the ament prefix of the ROS 2 wheels.
_vlm_prefix={prefix}
_vlm_prepend() {{
  eval "_vlm_old=\\${{$1:-}}"
  case ":$_vlm_old:" in
    *":$2:"*) ;;
    *) eval "export $1=\\"$2\\${{_vlm_old:+:\\$_vlm_old}}\\"" ;;
  esac
}}
_vlm_prepend AMENT_PREFIX_PATH "$_vlm_prefix"
_vlm_prepend CMAKE_PREFIX_PATH "$_vlm_prefix"
_vlm_prepend PATH "$_vlm_prefix/bin"
_vlm_prepend LD_LIBRARY_PATH "$_vlm_prefix/lib"
for _vlm_libs in {libs}; do
  [ -d "$_vlm_libs" ] && _vlm_prepend LD_LIBRARY_PATH "$_vlm_libs"
done
unset _vlm_prefix _vlm_old _vlm_libs
unset -f _vlm_prepend
"""


def fix_cmake(prefix: pathlib.Path) -> int:
    """Rewrite the hard-coded include dirs; return how many files changed."""
    include = sysconfig.get_paths()['include']
    changed = 0
    for path in sorted(prefix.glob('share/*/cmake/*.cmake')):
        text = path.read_text()
        fixed = text.replace(BUILD_NUMPY, numpy.get_include()).replace(BUILD_INCLUDE, include)
        if fixed != text:
            path.write_text(fixed)
            changed += 1
    return changed


def write_local_setup(prefix: pathlib.Path) -> None:
    """Write the sh and bash local_setup files colcon chains through."""
    site = pathlib.Path(sysconfig.get_paths()['purelib'])
    text = LOCAL_SETUP.format(prefix=prefix, libs=f'{site}/ros_*.libs')
    for name in ('local_setup.sh', 'local_setup.bash'):
        (prefix / name).write_text(text)


def main() -> None:
    """Fix the venv named on the command line (default: the running interpreter's prefix)."""
    prefix = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix).resolve()
    changed = fix_cmake(prefix)
    write_local_setup(prefix)
    print(f'fix_wheel_cmake: {changed} cmake files rewritten under {prefix}')


if __name__ == '__main__':
    main()

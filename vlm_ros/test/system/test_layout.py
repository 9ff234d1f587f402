"""The package's layout is its architecture: one folder per concern, imports run one way.

Layers, lowest first: engine (ROS-free) < models (synthetic checkpoints) < compat (what differs
between ROS 2 distros) < spin < node < bag < eval < demo < tools < benchmarks. A module may
import its own layer and lower ones, never a higher one; engine/ imports no rclpy, and its top
level and remote/ import no torch or transformers (checked both from the source text and by
importing them where torch cannot be imported).
"""

import subprocess
import sys

import pytest

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent


def test_remote_side_imports_where_torch_cannot():
    """Importing what the openai backend needs never reaches torch or transformers."""
    code = ('import sys\n'
            'for name in ("torch", "transformers"): sys.modules[name] = None\n'
            'import vlm_ros.engine, vlm_ros.engine.remote, vlm_ros.node.node\n'
            'from vlm_ros.engine import EngineConfig, VlmError, make_engine\n'
            'engine = make_engine(EngineConfig(model="m", backend="openai"))\n'
            'try:\n'
            '    make_engine(EngineConfig(model="m"))\n'
            'except VlmError as exc:\n'
            '    print(exc.kind, exc)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('unsupported '), result.stdout
    assert 'needs torch and transformers' in result.stdout, result.stdout

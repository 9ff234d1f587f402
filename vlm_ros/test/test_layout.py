"""The package's layout is its architecture: one folder per concern, imports run one way.

Layers, lowest first: engine (ROS-free) < compat (what differs between ROS 2 distros) < spin
< node < bag < eval < demo < tools. A module may import its own layer and lower ones, never a
higher one; engine/ imports no rclpy, and its top level and remote/ import no torch or
transformers (checked both from the source text and by importing them where torch cannot be
imported).
"""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'vlm_ros'
LAYERS = ('engine', 'compat', 'spin', 'node', 'bag', 'eval', 'demo', 'tools')
ROS = ('rclpy', 'rcl_interfaces', 'lifecycle_msgs', 'sensor_msgs', 'std_msgs', 'vlm_ros_msgs',
       'diagnostic_msgs', 'builtin_interfaces', 'rosgraph_msgs', 'ament_index_python')
MODEL_RUNTIME = ('torch', 'transformers', 'tokenizers', 'accelerate', 'safetensors')
MAX_LINES = 400


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


PATHS = sorted(PACKAGE.rglob('*.py'))
NAMES = {module_name(path) for path in PATHS}


def imports(path: pathlib.Path) -> set:
    """Every module path imports, anywhere in it (function-level imports count too)."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            # 'from . import params' imports the module params, not a name of the package
            submodules = {f'{target}.{alias.name}' for alias in node.names} & NAMES
            found.update(submodules or {target})
    return found


MODULES = {module_name(path): path for path in PATHS}
GRAPH = {name: {i for i in imports(path) if i.split('.')[0] == 'vlm_ros' and i != 'vlm_ros'}
         for name, path in MODULES.items()}


def layer(name: str) -> str:
    parts = name.split('.')
    return parts[1] if len(parts) > 1 else ''


def test_every_module_belongs_to_a_layer():
    stray = [name for name in MODULES if name != 'vlm_ros' and layer(name) not in LAYERS]
    assert not stray, f'modules outside the layers {LAYERS}: {stray}'
    for folder in LAYERS:
        init = PACKAGE / folder / '__init__.py'
        if init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc and 'import' in doc, f'{init} must say what lives there and may import'


def test_imports_never_go_up_a_layer():
    upward = [f'{name} imports {target}' for name, targets in GRAPH.items() if layer(name)
              for target in targets
              if LAYERS.index(layer(target)) > LAYERS.index(layer(name))]
    assert not upward, '\n'.join(upward)


def test_no_import_cycles():
    modules = {name: {t for t in targets if t in MODULES} for name, targets in GRAPH.items()}
    state = {}

    def visit(name, path):
        state[name] = 'open'
        for target in sorted(modules[name]):
            if state.get(target) == 'open':
                cycle = path[path.index(target):] + [target]
                pytest.fail('import cycle: ' + ' -> '.join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[name] = 'done'
    for name in modules:
        if name not in state:
            visit(name, [name])


def test_engine_is_ros_free_and_its_remote_side_model_free():
    for name, path in MODULES.items():
        if layer(name) != 'engine':
            continue
        external = {i.split('.')[0] for i in imports(path)}
        assert not external & set(ROS), f'{name} imports ROS: {external & set(ROS)}'
        if not name.startswith('vlm_ros.engine.local'):
            assert not external & set(MODEL_RUNTIME), \
                f'{name} imports {external & set(MODEL_RUNTIME)}'
            local = {t for t in GRAPH[name] if t.startswith('vlm_ros.engine.local')}
            assert not local or name == 'vlm_ros.engine', f'{name} imports {local}'


def test_node_does_not_import_tools_eval_or_demo():
    for name, targets in GRAPH.items():
        if layer(name) == 'node':
            assert not {layer(t) for t in targets} & {'tools', 'eval', 'demo', 'bag'}, name


def test_modules_are_small():
    big = {name: n for name, path in MODULES.items()
           if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f'modules over {MAX_LINES} lines: {big}'


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

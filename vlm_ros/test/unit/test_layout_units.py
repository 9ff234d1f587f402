"""The package's layout is its architecture: one folder per concern, imports run one way.

Layers, lowest first: engine (ROS-free) < models (synthetic checkpoints) < compat (what differs
between ROS 2 distros) < transport (the DDS profile) < boundary (rclpy's own handlers, guarded)
< spin < node < bag < eval < head (the reference action head) < demo < tools < benchmarks. A
module may import its own layer and lower ones, never a higher one; the node and the tools
never import the synthetic checkpoints or the demo, and every benchmark lives in benchmarks/;
engine/ imports no rclpy, and its top level and remote/ import no torch or transformers
(checked both from the source text and by importing them where torch cannot be imported).
"""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'vlm_ros'
LAYERS = ('engine', 'models', 'compat', 'transport', 'boundary', 'spin', 'node', 'bag', 'eval',
          'head', 'demo', 'tools', 'benchmarks')
ROS = ('rclpy', 'rcl_interfaces', 'lifecycle_msgs', 'sensor_msgs', 'std_msgs', 'vlm_ros_msgs',
       'diagnostic_msgs', 'builtin_interfaces', 'rosgraph_msgs', 'ament_index_python')
MODEL_RUNTIME = ('torch', 'transformers', 'tokenizers', 'accelerate', 'safetensors')
MAX_LINES = 400


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


PATHS = sorted(PACKAGE.rglob('*.py'))
NAMES = {module_name(path) for path in PATHS}


def imports(path: pathlib.Path, top_level: bool = False) -> set:
    """Every module path imports, anywhere in it (function-level imports count too).

    top_level: only what importing path imports (not in functions, not for type checking).
    """
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree)
    if top_level:
        nodes = (node for statement in tree.body if not _for_type_checking(statement)
                 for node in _outside_functions(statement))
    for node in nodes:
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


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _for_type_checking(statement) -> bool:
    return isinstance(statement, ast.If) and 'TYPE_CHECKING' in ast.dump(statement.test)


def _outside_functions(node):
    if not isinstance(node, FUNCTIONS):
        yield node
        for child in ast.iter_child_nodes(node):
            yield from _outside_functions(child)


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


def test_only_the_demo_and_the_benchmarks_use_synthetic_checkpoints():
    """An operator's tool or node runs the operator's model: no tiny or random-weight one.

    The benchmarks build synthetic checkpoints (models/) but never import the demo.
    """
    banned = {'node': {'models', 'demo', 'benchmarks'}, 'tools': {'models', 'demo', 'benchmarks'},
              'benchmarks': {'demo'}}
    wrong = [f'{name} imports {target}' for name, targets in GRAPH.items()
             for target in targets if layer(target) in banned.get(layer(name), ())]
    assert not wrong, '\n'.join(wrong)


def test_every_benchmark_lives_in_benchmarks():
    """One place: vlm_ros/benchmarks/ (python -m vlm_ros.benchmarks.NAME, vlm_benchmark)."""
    repo = PACKAGE.parents[1]
    assert not (repo / 'benchmarks').exists(), 'benchmarks belong in vlm_ros/vlm_ros/benchmarks'
    stray = [name for name in MODULES if 'bench' in name and layer(name) != 'benchmarks']
    assert not stray, f'benchmark code outside vlm_ros/benchmarks/: {stray}'
    setup = (PACKAGE.parent / 'setup.py').read_text()
    assert "'vlm_benchmark = vlm_ros.benchmarks." in setup, 'vlm_benchmark must run benchmarks/'
    documents = [repo / 'README.md', *sorted((repo / 'docs').glob('*.md')),
                 *sorted((repo / 'scripts').iterdir())]
    module = re.compile(r'vlm_ros\.(?:benchmarks|models)(?:\.[a-z_]+)*')  # not NAME
    named = {(doc.name, found) for doc in documents if doc.is_file()
             for found in module.findall(doc.read_text())}
    missing = sorted(f'{doc}: {name}' for doc, name in named if name not in NAMES)
    assert not missing, f'documented modules that do not exist: {missing}'


def test_modules_are_small():
    big = {name: n for name, path in MODULES.items()
           if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f'modules over {MAX_LINES} lines: {big}'


MAX_CLASS_LINES = 200
# Classes still being split (issue 24): remove an entry once its class is under the limit.
OVERSIZED_CLASSES = set()


def test_classes_are_small():
    """A class over 200 lines does more than one thing: move a cohesive part out of it."""
    big = {f'{name}.{item.name}': size for name, path in MODULES.items()
           for item in ast.walk(ast.parse(path.read_text())) if isinstance(item, ast.ClassDef)
           and (size := item.end_lineno - item.lineno + 1) >= MAX_CLASS_LINES
           and (name, item.name) not in OVERSIZED_CLASSES}
    assert not big, f'classes of {MAX_CLASS_LINES} lines or more: {big}'


TESTS = pathlib.Path(__file__).resolve().parents[1]
TIERS = {'unit': 'test_*.py', 'system': 'test_*.py', 'support': '*.py'}


def test_tests_are_in_two_tiers_with_shared_support():
    """unit/ (scripts/test --unit), system/ and support/ (helpers, no tests); nothing loose."""
    loose = sorted(p.name for p in TESTS.glob('*.py') if p.name != 'conftest.py')
    assert not loose, f'test files outside unit/, system/ and support/: {loose}'
    folders = sorted(p.name for p in TESTS.iterdir() if p.is_dir() and p.name != '__pycache__')
    assert folders == sorted(TIERS), folders
    for tier, pattern in TIERS.items():
        stray = sorted(p.name for p in (TESTS / tier).glob('*.py')
                       if p.name != 'conftest.py' and not p.match(pattern))
        assert not stray, f'{tier}/ holds {stray}'
    assert not list((TESTS / 'support').glob('test_*.py')), 'support/ holds helpers, not tests'
    names = [p.name for tier in ('unit', 'system') for p in (TESTS / tier).glob('test_*.py')]
    assert len(names) == len(set(names)), 'a test file name in both tiers'


# What a test needs ROS for: its imports (ROS packages, the harnesses that start nodes, the
# package's ROS layers) and the fixtures that give it a ROS context or a node.
ROS_TEST_IMPORTS = (*ROS, 'launch', 'launch_ros', 'launch_pytest', 'launch_testing',
                    'node_harness', 'ros_harness', 'launch_harness', 'loop_harness', 'recordings',
                    'vlm_ros.compat', 'vlm_ros.transport', 'vlm_ros.boundary', 'vlm_ros.spin',
                    'vlm_ros.node', 'vlm_ros.bag', 'vlm_ros.eval', 'vlm_ros.demo', 'vlm_ros.tools')
ROS_FIXTURES = ('rclpy_context', 'test_node', 'start_vlm_node', 'node_executable')


def test_tests_marked_distro_independent_need_no_ros():
    """scripts/test runs them on the first leg only: no ROS 2 distro may change their result."""
    marked = [path for path in (TESTS / 'system').glob('test_*.py')
              if 'mark.distro_independent' in path.read_text()]  # module-wide or per test
    assert marked, 'no test file is marked distro_independent: the marker is dead'
    for path in marked:
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {node.module for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}
        ros = sorted(name for name in names
                     if any(name == r or name.startswith(f'{r}.') for r in ROS_TEST_IMPORTS))
        words = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | \
            {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
        used = sorted(words & set(ROS_FIXTURES))
        assert not ros + used, f'{path.name} is marked distro_independent but uses ROS: ' \
            f'{ros + used}'


PARAMETER_READS = ('get_parameter', 'get_parameters', 'get_parameter_or', 'p')
SETTINGS_BUILDERS = ('vlm_ros.node.node', 'vlm_ros.node.params', 'vlm_ros.node.settings')


def coupling(source: str, reads_allowed: bool = False) -> list:
    """Say where source keeps a node (self.X = node) or reads a parameter by name."""
    found = []
    for item in ast.walk(ast.parse(source)):
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes = {arg.arg for arg in (*item.args.args, *item.args.kwonlyargs)
                     if arg.arg.endswith('node')}
            for sub in ast.walk(item):
                if isinstance(sub, (ast.Assign, ast.AnnAssign)) and sub.value is not None:
                    targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                    values = sub.value.elts if isinstance(sub.value, ast.Tuple) else [sub.value]
                    if any(isinstance(t, (ast.Attribute, ast.Tuple)) for t in targets) and \
                            any(isinstance(v, ast.Name) and v.id in nodes for v in values):
                        found.append(f'line {sub.lineno}: keeps the node')
        elif isinstance(item, ast.Attribute) and item.attr in ('node', '_node') and \
                isinstance(item.value, ast.Name) and item.value.id == 'self':
            found.append(f'line {item.lineno}: self.{item.attr}')
        elif isinstance(item, ast.Call) and isinstance(item.func, ast.Attribute) and \
                item.func.attr in PARAMETER_READS and not reads_allowed:
            found.append(f'line {item.lineno}: reads a parameter by name (.{item.func.attr})')
    return sorted(set(found))


def test_node_parts_get_settings_and_collaborators_not_the_node():
    """Only node.py, the composition root, holds the node and reads parameters by name.

    A part of node/ may take the rclpy node to create its ROS entities, never keep it; it reads
    the Settings it is handed (a misspelt attribute fails at once), never a parameter by name.
    """
    assert coupling('class A:\n    def __init__(self, node):\n        self._x = node\n') \
        and coupling('def f(s):\n    return s.p("queue_size")\n'), 'the rule must see these'
    found = {name: where for name, path in MODULES.items()
             if layer(name) == 'node' and name != 'vlm_ros.node.node'
             and (where := coupling(path.read_text(), name in SETTINGS_BUILDERS))}
    assert not found, f'parts of node/ that keep the node or read parameters: {found}'


def test_the_commands_check_their_arguments_before_importing_torch():
    """A mistyped argument is answered at once, not after seconds of importing torch.

    What each console script imports when it starts (module level, transitively, with the
    packages around each module) holds no model runtime; vlm_node loads it at configure.
    """
    setup = (PACKAGE.parent / 'setup.py').read_text()
    scripts = re.findall(r"'(\w+) = (vlm_ros[\w.]+):main'", setup)
    assert len(scripts) >= 6, setup
    for command, start in scripts:
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name in seen or name not in MODULES:
                continue
            seen.add(name)
            parents = ['.'.join(name.split('.')[:n]) for n in range(2, name.count('.') + 1)]
            todo += parents + list(imports(MODULES[name], top_level=True))
        runtime = {name for name in seen if name.startswith(('vlm_ros.engine.local',
                                                              'vlm_ros.models'))}
        external = {i.split('.')[0] for name in seen for i in imports(MODULES[name], True)}
        assert not runtime and not external & set(MODEL_RUNTIME), \
            f'{command} imports {sorted(runtime) or sorted(external & set(MODEL_RUNTIME))}'


def test_durations_name_test_files_that_exist():
    """The parallel order (conftest.py) reads durations.txt: a renamed file is renamed there."""
    listed = [line.split(maxsplit=1)[1] for line in (TESTS / 'durations.txt').read_text()
              .splitlines() if line and not line.startswith('#')]
    assert listed, 'durations.txt lists no file: scripts/test-durations writes it'
    missing = [name for name in listed if not (TESTS.parents[1] / name).is_file()]
    assert not missing, f'durations.txt names files that are gone: {missing}'

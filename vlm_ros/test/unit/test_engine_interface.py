"""Every engine implements the whole declared interface (engine/interface.py), as declared.

A backend that drifts from the interface (a method missing, renamed, or taking other
arguments) fails here before any model or server runs; test_engine_contract.py then checks
what the operations do.
"""

import inspect

import pytest
from vlm_ros.engine import EngineConfig, make_engine
from vlm_ros.engine.errors import KINDS, NOT_LOADED
from vlm_ros.engine.interface import CONTRACT, Engine
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.remote import RemoteEngine
from vlm_ros.engine.results import RESULT_STATUSES

ABSTRACT = sorted(Engine.__abstractmethods__)
PROPERTIES = sorted(name for name in ABSTRACT if isinstance(getattr(Engine, name), property))
METHODS = sorted(set(ABSTRACT) - set(PROPERTIES))


def concrete_engines() -> list:
    """Every class below Engine that can be instantiated (all of engine/ is imported above)."""
    found, todo = [], [Engine]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not inspect.isabstract(cls):
            found.append(cls)
    return sorted(found, key=lambda cls: cls.__name__)


def test_both_backends_are_concrete_engines():
    assert concrete_engines() == [RemoteEngine, VlmEngine]
    assert isinstance(make_engine(EngineConfig(model='m')), Engine)
    assert isinstance(make_engine(EngineConfig(model='m', backend='openai')), Engine)
    with pytest.raises(TypeError, match='abstract'):
        Engine()


def test_the_interface_declares_every_operation_in_its_contract():
    assert set(METHODS) == set(CONTRACT), 'each abstract method has one CONTRACT entry'
    assert PROPERTIES == ['concurrency', 'is_loaded', 'model_name']
    for name, operation in CONTRACT.items():
        assert set(operation.raises) <= set(KINDS), name
        assert set(operation.statuses) <= set(RESULT_STATUSES), name
        assert operation.unloaded in ('raises', 'no-op', 'allowed', 'may raise'), name
        assert getattr(Engine, name).__doc__, f'{name} states its contract'
    answering = ('run', 'stream', 'score')
    assert all(NOT_LOADED in CONTRACT[name].raises for name in answering)
    assert all(CONTRACT[name].unloaded == 'raises' for name in answering)
    assert CONTRACT['cancel'].raises == CONTRACT['unload'].raises == ()


@pytest.mark.parametrize('engine_class', concrete_engines(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize('name', METHODS)
def test_methods_match_the_interface_signature(engine_class, name):
    implemented = getattr(engine_class, name)
    assert not getattr(implemented, '__isabstractmethod__', False)
    declared = inspect.signature(getattr(Engine, name)).parameters.values()
    actual = inspect.signature(implemented).parameters.values()
    assert [(p.name, p.kind, p.default) for p in actual] == \
        [(p.name, p.kind, p.default) for p in declared]


@pytest.mark.parametrize('engine_class', concrete_engines(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize('name', PROPERTIES)
def test_properties_are_implemented(engine_class, name):
    implemented = inspect.getattr_static(engine_class, name)
    assert not getattr(implemented, '__isabstractmethod__', False)
    engine = engine_class(EngineConfig(model='m'))
    assert not callable(getattr(engine, name))  # a value, not a method to call

"""configure's model load on its own thread, which a stopping node leaves (node/loading.py)."""

import threading

import pytest
from vlm_ros.engine import VlmError
from vlm_ros.node.loading import LoadStoppedError, load_unless_stopped

TIMEOUT = 10.0


def test_the_loads_result_is_returned():
    assert load_unless_stopped(lambda: 'the model', threading.Event()) == 'the model'


def test_the_loads_error_is_raised_in_the_callers_thread():
    def load():
        raise VlmError('not_found', 'model directory /x does not exist')
    with pytest.raises(VlmError, match='/x does not exist'):
        load_unless_stopped(load, threading.Event())


def test_a_stop_during_the_load_returns_at_once_and_leaves_the_load_running():
    started, release, stop = threading.Event(), threading.Event(), threading.Event()

    def load():  # a download that does not end until released
        started.set()
        release.wait(TIMEOUT)
        return 'the model'
    failure = []

    def configure():
        try:
            load_unless_stopped(load, stop)
        except LoadStoppedError as exc:
            failure.append(exc)
    configuring = threading.Thread(target=configure)
    configuring.start()
    assert started.wait(TIMEOUT)
    stop.set()
    configuring.join(TIMEOUT)
    assert not configuring.is_alive() and not release.is_set()
    assert str(failure[0]) == 'the node stopped while the model was loading'
    loaders = [t for t in threading.enumerate() if t.name == 'model-load']
    assert loaders and all(t.daemon for t in loaders)  # the process's exit ends it
    release.set()

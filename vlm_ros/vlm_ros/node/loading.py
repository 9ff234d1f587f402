"""Loading the model on a thread of its own, which a stopping node leaves behind.

configure loads the model on an executor thread, and a start-up download takes minutes on a
robot (gigabytes), which huggingface_hub cannot be asked to stop. A signal meanwhile was heard
only once the download had ended: the executor waits for its threads before the process
exits, and a launch system's escalation killed the node first (SIGKILL), leaving its Fast DDS
shared memory behind. Here the load runs on a daemon thread that holds nothing of ROS: when the
node stops (its done Event), configure fails at once and the process ends without waiting for
the load (vlm_node exits with os._exit). What was downloaded stays in the Hugging Face cache
(an unfinished file too, which the next download resumes).
"""

import threading
from collections.abc import Callable
from typing import TypeVar

LOAD_CHECK = 0.1  # s between looks whether the node stopped, while the model loads

Loaded = TypeVar('Loaded')


class LoadStoppedError(Exception):
    """The node stopped while the model was loading; the load was left to the exit."""


def load_unless_stopped(load: Callable[[], Loaded], stop: threading.Event) -> Loaded:
    """Return load()'s result, or raise what it raised; LoadStoppedError once stop is set."""
    finished = threading.Event()
    outcome = {}

    def run() -> None:
        try:
            outcome['result'] = load()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome['error'] = exc
        finally:
            finished.set()
    threading.Thread(target=run, name='model-load', daemon=True).start()
    while not finished.wait(LOAD_CHECK):
        if stop.is_set():
            raise LoadStoppedError('the node stopped while the model was loading')
    if 'error' in outcome:
        raise outcome['error']
    return outcome['result']

"""The engine interface: what every backend offers, and what each operation returns or raises.

The node, the tools and the evaluator drive an engine through this interface alone, so the
in-process model (local.VlmEngine) and a server (remote.RemoteEngine) are interchangeable. As
in nav2_core's plugin classes, every operation is abstract and its docstring states the
contract; base.EngineBase holds what both backends share. test_engine_contract.py runs the same
inputs through both engines and checks them against CONTRACT.

=========  =======================================  =================================  ======
operation  returns (result statuses: status_of)     raises VlmError kinds              unloaded
=========  =======================================  =================================  ======
load       None                                     bad_input not_found unsupported    (loads)
                                                    out_of_memory load_failed
prepare    None                                     bad_input                          no-op
run        list[Result]: ok, invalid, cancelled     load_failed bad_input              raises
                                                    out_of_memory generation_failed    load_failed
                                                    backend_* (remote)
                                                    unsupported (features, remote)
stream     Result: ok, invalid, cancelled           as run                             as run
score      list[Score]                              load_failed bad_input unsupported  raises
                                                    out_of_memory generation_failed
cancel     None                                     never raises                       no-op
unload     None                                     never raises                       no-op
update     None                                     bad_input                          applies
describe   str                                      load_failed                        may raise
cameras    None                                     load_failed unsupported            may raise
status     dict (empty or plain values)             never raises                       allowed
=========  =======================================  =================================  ======

An operation a backend cannot do raises 'unsupported' on every call, loaded or not, with the
reason and the alternative (score on the openai backend). Cancelling is never an error: a
cancelled request's result is marked cancelled and keeps the text generated until then.
"""

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from .errors import BACKEND_KINDS, NOT_LOADED
from .results import RESULT_STATUSES, Request, Result


@dataclass(frozen=True)
class Operation:
    """What one engine operation may give back: result statuses, and VlmError kinds raised.

    ``unloaded`` is what a call does before load() and after unload(): 'raises' (NOT_LOADED,
    or 'unsupported' for an operation the backend cannot do), 'no-op', 'allowed' (works the
    same) or 'may raise' (NOT_LOADED on a backend that needs the model for it).
    """

    statuses: tuple
    raises: tuple
    unloaded: str


_ANSWER_KINDS = (NOT_LOADED, 'bad_input', 'unsupported', 'out_of_memory', 'generation_failed',
                 *BACKEND_KINDS)
CONTRACT = {
    'load': Operation((), ('bad_input', 'not_found', 'unsupported', 'out_of_memory',
                           'load_failed'), 'allowed'),
    'prepare': Operation((), ('bad_input',), 'no-op'),
    'run': Operation(RESULT_STATUSES, _ANSWER_KINDS, 'raises'),
    'stream': Operation(RESULT_STATUSES, _ANSWER_KINDS, 'raises'),
    'score': Operation((), (NOT_LOADED, 'bad_input', 'unsupported', 'out_of_memory',
                            'generation_failed'), 'raises'),
    'cancel': Operation((), (), 'no-op'),
    'unload': Operation((), (), 'no-op'),
    'update': Operation((), ('bad_input',), 'allowed'),
    'describe': Operation((), (NOT_LOADED,), 'may raise'),
    'check_cameras': Operation((), (NOT_LOADED, 'unsupported'), 'may raise'),
    'status': Operation((), (), 'allowed'),
}


class Engine(ABC):
    """One loaded VLM that answers requests; see the module's table for every operation.

    Besides the operations, an engine has ``config`` (engine.config.EngineConfig, replaced by
    update) and ``templates`` (the prompt templates in use). load() and unload() are called
    from one thread; run(), prepare() and cancel() may be called from others while it is loaded.
    """

    @property
    @abstractmethod
    def is_loaded(self) -> bool:
        """Tell whether load() has succeeded and unload() has not run since."""

    @property
    @abstractmethod
    def model_name(self) -> str:
        """The model's name as requests and answers carry it (loaded or not)."""

    @property
    @abstractmethod
    def concurrency(self) -> int:
        """How many run() calls may usefully overlap (1: batch requests into one run instead)."""

    @abstractmethod
    def load(self) -> None:
        """Make the engine ready to answer: load weights, or start a server's client.

        Raises VlmError 'bad_input' (a bad device, dtype, decode mode or URL), 'not_found',
        'unsupported', 'out_of_memory' or 'load_failed'; a failed load leaves it unloaded.
        """

    @abstractmethod
    def unload(self) -> None:
        """Free what load() took (memory, connections, threads); never raises, idempotent.

        Afterwards every operation behaves as before load(), and load() may run again.
        """

    @abstractmethod
    def prepare(self, images: list) -> None:
        """Preprocess images that waiting requests carry, before run() is asked for them.

        A hint for overlapping a batch's preprocessing with the previous batch's generation:
        a no-op where the backend has nothing to prepare or nothing is loaded. Raises
        VlmError('bad_input') for an image the processor refuses.
        """

    @abstractmethod
    def run(self, requests: list, on_text: Optional[Callable[[str], None]] = None,
            cancel: Optional[threading.Event] = None) -> list:
        """Answer a batch of requests; one Result per request, in request order.

        Each request may carry its own ``on_text`` stream and ``cancel`` event (Request),
        which apply to it alone, also inside a batch; ``on_text`` here streams a batch of one
        and ``cancel`` stops the requests without their own event. A cancelled request's
        result comes back with cancelled set (and the text so far), never as an error. An
        empty list returns [] at once. Raises VlmError NOT_LOADED when not loaded,
        'bad_input' for a bad image or text or an on_text for a batch of several, and
        'out_of_memory', 'generation_failed' or a 'backend_*' kind for the model or server.
        """

    @abstractmethod
    def stream(self, request: Request, on_text: Callable[[str], None],
               cancel: Optional[threading.Event] = None) -> Result:
        """Answer one request, handing its text increments to on_text as they come.

        The increments' concatenation equals the result's text; statuses and errors as run().
        """

    @abstractmethod
    def score(self, requests: list, targets: list) -> list:
        """Return one Score per (request, target): the teacher-forced likelihood of target.

        One forward pass over the whole list (the caller batches). Raises VlmError NOT_LOADED
        when not loaded, 'bad_input' for lists of different lengths, a blank target or a bad
        image or text, 'out_of_memory' or 'generation_failed' for the model, and
        'unsupported' where the backend cannot see its model's probabilities.
        """

    @abstractmethod
    def cancel(self) -> None:
        """Stop every request being answered now; their results come back cancelled.

        Requests given to run() after this call are not affected. Never raises; a no-op when
        nothing runs or nothing is loaded.
        """

    @abstractmethod
    def update(self, **fields) -> None:
        """Change run-time fields of the config (base.RUN_TIME_FIELDS) for the next request.

        Loaded or not. Raises VlmError('bad_input') for any other field or a bad template,
        and then changes nothing.
        """

    @abstractmethod
    def describe(self) -> str:
        """Say what is loaded and where, for a log line; may raise NOT_LOADED when not."""

    @abstractmethod
    def check_cameras(self, names: tuple) -> None:
        """Raise VlmError('unsupported') when one prompt cannot hold an image per camera.

        A node with several cameras asks this when configuring, so a model that takes one
        image a prompt is a configure error that says so, not a failed answer per request
        (or a camera silently dropped). May raise NOT_LOADED where it needs the model.
        """

    @abstractmethod
    def status(self) -> dict:
        """Plain values for diagnostics (device, memory, reachability); never raises."""

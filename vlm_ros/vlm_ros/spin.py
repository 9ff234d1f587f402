"""The one start-up and shutdown pattern every vlm_ros process uses.

rclpy aborts the process ("terminate called without an active exception") when a thread is still
inside an executor while the context shuts down, and a callback that publishes while the
context is torn down fails ("publisher's context is invalid"). rclpy's own signal handlers shut
the context down first, so both races are possible. Here the order is fixed instead: on SIGINT
or SIGTERM the executor is stopped (running callbacks finish), the spin thread joined, the
nodes destroyed, and only then ``rclpy.try_shutdown()`` runs; the process exits 0.

Before ``rclpy.init`` every such process also takes the large-frames DDS profile
(transport.py).

On the way out the node's reference cycles are collected before returning: the DDS participant,
and with it Fast DDS's shared-memory segments in /dev/shm (16.5 MB with the profile), is freed
only with the last rclpy handle, and a process that ends with ``os._exit`` (vlm_node) never
collects them. Without it every vlm_node run left its segments behind, in RAM, until reboot.
"""

import faulthandler
import gc
import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Collection, Sequence
from typing import Optional

import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.exceptions import (
    InvalidHandle,
    InvalidParameterTypeException,
    InvalidParameterValueException,
)
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from .boundary import guard_rclpy_services
from .transport import large_frames_transport

# s a thread holding the GIL runs before a waiting one gets it (Python's default: 0.005). A
# worker running a model's Python-heavy decoding loop holds the GIL most of the time, and the
# executor thread needs it at every wake-up (a message, a service request, a timer): with 5 ms
# per hand-over, 8 instructions arriving together took up to 0.6 s to be taken in (vlm_node, 8
# streams, 2 cores); with 0.5 ms, 0.05 s.
SWITCH_INTERVAL = 0.0005
# s after a signal before every thread's stack is printed to stderr, if the process is still
# stopping by then: a stop that hangs says where.
STUCK_STOP_DUMP = 15.0
# s a spinning thread waits for work before it looks whether stop() was called (stop() also
# wakes it at once).
SPIN_CHECK = 0.5
# s spin_main's main thread waits before it looks whether the node is done (a signal or the
# spinning thread's end wakes it at once).
MAIN_CHECK = 0.1

def _raced(exc: Exception) -> bool:
    """Say whether exc is rclpy's executor tripping over an entity destroyed under it.

    Jazzy's executor skips a waitable (an action client or server) that it could not enter
    because it was destroyed meanwhile, then adds it to the wait set all the same, which fails
    with an RCLError "Failed to add ... to wait set: ... pointer is invalid" (ros2/rclpy#1284).
    """
    return isinstance(exc, InvalidHandle) or 'to wait set' in str(exc)


class TrackingExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor that tells whether the tasks created on it have all run.

    An action server sends a goal's result from tasks it creates once the goal is answered:
    the execute callback's, then one per get_result request, created when that has returned.
    A shutdown that stopped the executor before they ran lost the result (a goal answered
    CANCELLED on SIGTERM never reached its client, in one CI run).
    """

    def __init__(self, num_threads: Optional[int] = None):
        super().__init__(num_threads)
        self._created = []  # tasks created and not seen done
        self._created_lock = threading.Lock()

    def create_task(self, callback, *args, **kwargs):
        """Create the task as rclpy does, and keep it until it is done."""
        task = super().create_task(callback, *args, **kwargs)
        with self._created_lock:
            self._created = [created for created in self._created if not created.done()]
            self._created.append(task)
        return task

    def tasks_done(self) -> bool:
        """Tell whether every task created so far has run to its end."""
        with self._created_lock:
            return all(task.done() for task in self._created)


class SpinThread:
    """Spin nodes on a background thread, and stop them in the order rclpy needs.

    Tests and tools that need the calling thread free (to publish, wait on events, assert) use
    this instead of ``rclpy.spin``; ``stop`` is safe to call twice.
    """

    def __init__(self, nodes: Sequence[Node], executor: Optional[Executor] = None,
                 on_exit: Optional[Callable[[], None]] = None):
        self._nodes = list(nodes)
        self._on_exit = on_exit
        self.error: Optional[BaseException] = None  # what ended spinning, if not a shutdown
        self.races = 0
        self._stopping = False
        self._executor = executor or MultiThreadedExecutor()
        for node in self._nodes:
            self._executor.add_node(node)
        # stop() triggers it. The executor's own wake() only has it rebuild its wait set and
        # wait on for the rest of SPIN_CHECK (every node and tool took 0.5 s more to exit); a
        # guard condition with a callback is work, so spin_once returns at once. Its own group:
        # a busy callback of the node's default group cannot hold it back.
        self._wakeup = self._nodes[0].create_guard_condition(
            lambda: None, ReentrantCallbackGroup()) if nodes else None
        self._thread = threading.Thread(target=self._spin, name='ros-spin', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._spin_through_races()
        except ExternalShutdownException:
            pass
        except Exception as exc:  # noqa: BLE001 - kept for the caller: the exit status says it
            self.error = exc
            traceback.print_exc()
        finally:
            if self.error is None and not self._stopping:  # unasked: say so, exit status 1
                self.error = RuntimeError('the executor stopped spinning although stop() was '
                                          'not called: the ROS context was shut down')
                print(f'vlm_ros.spin: {self.error}', file=sys.stderr, flush=True)
            if self._on_exit is not None:
                self._on_exit()

    def _spin_through_races(self) -> None:
        """Spin; when rclpy trips over an entity destroyed under its wait set, spin on.

        rclpy's executor builds its wait set from the nodes' entities, and raises InvalidHandle
        when one of them was destroyed meanwhile by another thread (ros2/rclpy#1206, #1355,
        #1491: a lifecycle transition destroying a subscription or timer, say). That entity
        is gone and the executor's state is intact (its callback generator is rebuilt), so the
        process spins on instead of dying; ``races`` counts how often.
        """
        while True:
            try:
                self._spin_until_stopped()
                return
            except (InvalidHandle, _rclpy.RCLError) as exc:
                if not _raced(exc):
                    raise
                self.races += 1
                print(f'vlm_ros.spin: the executor raced a destroyed entity ({exc}); spinning '
                      'on', file=sys.stderr, flush=True)

    def _spin_until_stopped(self) -> None:
        """Spin as Executor.spin does, until stop() asks or the context is shut down."""
        while not self._stopping and self._executor.context.ok():
            self._executor.spin_once(timeout_sec=SPIN_CHECK)

    def stop(self) -> None:
        """Stop spinning, join the threads, take the last callbacks' ends, destroy the nodes.

        The spin thread leaves its loop before the executor shuts down: a shutdown while it
        waits destroyed the guard condition it was waiting on ('NoneType' object has no
        attribute 'handle', Jazzy; ros2/rclpy#968, #1724). Jazzy's shutdown also leaves its
        pool's callbacks running (ros2/rclpy#893, fixed in Kilted): a response could be on
        its way out of one while the node was destroyed, so they are waited for.
        """
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.trigger()
            self._wakeup = None  # destroyed with its node below: stop() may come again
        self._executor.wake()
        self._thread.join()
        self._executor.shutdown()
        pool = getattr(self._executor, '_executor', None)  # a MultiThreadedExecutor's threads
        if pool is not None:
            pool.shutdown(wait=True)
        self._take_last_results()
        for node in self._nodes:
            node.destroy_node()
        self._nodes.clear()

    def _take_last_results(self) -> None:
        """Retrieve what the callbacks that ended after the last spin raised.

        A MultiThreadedExecutor takes a callback's exception only at its next spin; the last
        ones, done while it shut down, would print "The following exception was never
        retrieved" when collected. A destroyed-entity race among them is counted, as spinning
        counts it; any other exception is printed with its traceback and kept in ``error``.
        """
        for task in list(getattr(self._executor, '_futures', ())):
            exc = task.exception() if task.done() else None
            if exc is None:
                continue
            if _raced(exc):
                self.races += 1
            elif self.error is None:
                self.error = exc
                traceback.print_exception(exc)


class _MainWake:
    """Wake spin_main's waiting main thread from a signal handler or another thread, lock-free.

    A Python signal handler runs in the main thread between two of its bytecodes: one that set
    a threading.Event found, once in about 1100 node stops (CI, 2 cores), the Event's lock held
    by the very wait it had interrupted, and waited for it for ever. Here the interpreter's own
    C handler writes the signal's byte to a socket (signal.set_wakeup_fd), another thread
    writes one with set(), and the main thread waits on the socket: no lock on either side.
    """

    def __init__(self):
        self._read, self._write = socket.socketpair()
        for end in (self._read, self._write):
            end.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)

    def set(self) -> None:
        """Wake the main thread's wait (any thread)."""
        try:
            self._write.send(b'\0')
        except OSError:  # full (a wake-up is pending anyway) or closed (no one waits)
            pass

    def wait(self, timeout: float) -> None:
        """Return when woken, or after timeout s; every pending wake-up is taken."""
        select.select([self._read], [], [], timeout)
        try:
            while self._read.recv(512):
                pass
        except OSError:  # nothing more to take
            pass

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        self._read.close()
        self._write.close()


def ros_arguments_only(about: str, parameters: Collection[str],
                       args: Optional[list] = None) -> Optional[int]:
    """Answer -h (0) or refuse (2) what is not a ROS argument; None when nothing else is there.

    rcl reads ``vlm_node model:=DIR`` (``-p`` forgotten) as a remap: the default model loaded;
    rclpy ignores the rest (``--help`` started the node). Bare remaps of other names stay rcl's.
    """
    argv = list(sys.argv if args is None else args)
    tool = os.path.basename(argv[0] if argv else '') or 'vlm_ros'
    names, inside, bare = {*parameters, 'use_sim_time'}, False, []  # inside: --ros-args ... [--]
    for arg in argv[1:]:  # before rcl, which would log the remap it reads there
        inside = arg == '--ros-args' or (inside and arg != '--')
        if not inside and ':=' in arg and arg.split(':=')[0] in names:
            bare.append(arg)
    try:
        own = bare or remove_ros_args(argv)[1:]
    except Exception:  # noqa: BLE001 - malformed ROS arguments: rclpy.init reports them
        return None
    if not own:
        return None
    if own[0] in ('-h', '--help'):
        print(f'usage: {tool} [--ros-args -p NAME:=VALUE ... --params-file FILE ...]\n\n'
              f'{about.strip()}')
        return 0
    hint = (f': a parameter goes after --ros-args, {tool} --ros-args -p {own[0]}'
            if ':=' in own[0] else ' (--help says what it takes)')
    print(f'{tool}: {own[0]!r} is not a ROS argument, and {tool} takes no other{hint}',
          file=sys.stderr, flush=True)
    return 2


def refused_parameter(exc: Exception) -> str:
    """Say why rclpy refused a parameter's launch value, and how to write a double.

    ``-p step_time:=1`` is an integer to rcl, and a double parameter refuses it.
    """
    reason = str(exc.args[0]) if exc.args else str(exc)
    if "of type 'INTEGER', expecting type 'DOUBLE'" in reason:
        reason += ' (a double is written with a decimal point: 1.0, not 1)'
    return f'a parameter is refused: {reason}'


def spin_main(make_node: Callable[[], Node], args: Optional[list] = None,
              num_threads: Optional[int] = None) -> int:
    """Run one node until SIGINT, SIGTERM, an external shutdown, or the node is done.

    The main thread only waits; a ``MultiThreadedExecutor`` with num_threads threads (default:
    the CPU count) spins on a background thread, so services, actions and parameter callbacks
    stay responsive while another callback group is busy. A node with a ``done`` Event (a
    one-shot tool such as vlm_client) ends the process when it is set, with the node's
    ``code`` as exit status; a signal means a clean exit, the node's ``code`` after its
    ``shutdown_gracefully()`` (0 unless the node says otherwise), an executor that dies of an
    exception means 1 (the traceback is printed), ROS arguments rcl cannot read mean 2
    (the reason is printed). On a signal, a node's
    ``shutdown_gracefully()`` (vlm_node: the lifecycle shutdown transition) runs first, while
    the executor (a TrackingExecutor) still spins, so what it answers on the way out is sent.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    # A crash in a C extension (SIGSEGV) or an abort (SIGABRT: a supervisor's, or a test's
    # on a stop that hangs) prints every thread's Python stack first, GIL held or not.
    faulthandler.enable()
    transport = large_frames_transport()
    tool = os.path.basename(sys.argv[0]) or 'vlm_ros'
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except _rclpy.RCLError as exc:  # the command line's ROS arguments: say so, exit 2
        reason = str(exc).split(', at ')[0]
        hint = ('; a value that YAML reads as something else (braces, brackets, ": ") needs '
                'quotes: -p "prompt_plan:=\'{instruction}, in steps\'"'
                if 'parameter' in reason else '')  # not for a remap or a log level
        print(f'{tool}: the ROS arguments cannot be read ({reason}){hint}', file=sys.stderr,
              flush=True)
        return 2
    rclpy.logging.get_logger('vlm_ros').debug(f'transport: {transport}')
    stop = threading.Event()  # the spinning thread ended
    received = []
    wake = _MainWake()

    def on_signal(number, _frame):
        received.append(signal.Signals(number).name)  # nothing that locks: see _MainWake

    def on_exit():
        stop.set()
        wake.set()
    # Kept after the return too: the caller exits next, and a SIGINT or SIGTERM that arrives
    # meanwhile (a launch system's, a test's) asks for what is happening anyway. Python's own
    # handlers would turn it into a KeyboardInterrupt or a death by signal, not exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    spinner = None
    code = 0
    try:
        try:
            node = make_node()
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:  # -p's
            print(f'{tool}: {refused_parameter(exc)}', file=sys.stderr, flush=True)
            return 2
        guard_rclpy_services(node)
        done = getattr(node, 'done', threading.Event())
        spinner = SpinThread([node], TrackingExecutor(num_threads), on_exit=on_exit)
        while not (received or stop.is_set()):
            if done.is_set():
                code = node.code
                break
            wake.wait(MAIN_CHECK)
        else:
            if received:
                print(f'vlm_ros.spin: {received[0]}: stopping', file=sys.stderr, flush=True)
                faulthandler.dump_traceback_later(STUCK_STOP_DUMP)
            getattr(node, 'shutdown_gracefully', lambda: None)()
            code = getattr(node, 'code', 0)  # 0 unless it says otherwise (vlm_replay: 130)
            if spinner.error is not None:
                code = 1  # the executor died of an exception (printed): not a clean stop
    finally:
        if spinner is not None:
            spinner.stop()
        wake.close()
        rclpy.try_shutdown()
        node = spinner = None
        gc.collect()  # frees the participant and its shared memory (module docstring)
        faulthandler.cancel_dump_traceback_later()
    return code

"""SpinThread spins on through rclpy's destroyed-entity races, and only through those."""

import threading

import pytest
from rclpy.exceptions import InvalidHandle
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.task import Future
from vlm_ros.spin import SpinThread

# What Jazzy's executor raised in CI when a test destroyed an action client while it spun.
JAZZY_RACE = ("Failed to add 'rcl_action_client_t' to wait set: action client pointer is "
              'invalid, at /project/src/rcl_action/action_client.c:489')


class Raising:
    """An executor whose spin_once raises each of errors in turn, then waits until woken.

    ``spins`` counts the spinning that began: one per error raised, and the one that went on.
    """

    def __init__(self, errors):
        self.errors = list(errors)
        self.spins = 0
        self.spinning = threading.Event()  # past the errors, spinning as usual
        self._woken = threading.Event()
        self.context = self  # its context is always ok
        self.in_spin = False
        self.shut_down_while_spinning = None

    def ok(self) -> bool:
        return True

    def add_node(self, node):
        pass

    def spin_once(self, timeout_sec=None):
        if self.errors:
            self.spins += 1
            raise self.errors.pop(0)
        if not self.spinning.is_set():
            self.spins += 1
            self.spinning.set()
        self.in_spin = True
        self._woken.wait(timeout_sec)
        self.in_spin = False

    def wake(self):
        self._woken.set()

    def shutdown(self):
        self.shut_down_while_spinning = self.in_spin


def spun(errors):
    """Spin an executor raising errors until it spins or dies, then stop it.

    Return (SpinThread, executor, whether the spin thread ended before stop()).
    """
    ended = threading.Event()
    executor = Raising(errors)
    spinner = SpinThread([], executor, on_exit=ended.set)
    for _ in range(1000):
        if executor.spinning.wait(0.01) or ended.is_set():
            break
    died = ended.is_set()
    spinner.stop()
    return spinner, executor, died


def test_the_executor_shuts_down_only_once_nothing_spins_in_it():
    """Jazzy's shutdown destroys the guard condition a spinning thread waits on (rclpy#968)."""
    _, executor, died = spun([])
    assert not died and executor.shut_down_while_spinning is False


def test_destroyed_entity_races_are_counted_and_spinning_goes_on():
    spinner, executor, died = spun([InvalidHandle('destroyed'), _rclpy.RCLError(JAZZY_RACE)])
    assert (spinner.races, executor.spins, died) == (2, 3, False)
    assert spinner.error is None


@pytest.mark.parametrize('error', [_rclpy.RCLError('failed to take message: timeout'),
                                   ValueError('a bug in a callback')])
def test_any_other_error_ends_spinning_and_is_kept_for_the_exit_status(error, capsys):
    spinner, executor, died = spun([error])
    assert (spinner.races, executor.spins, died, spinner.error) == (0, 1, True, error)
    assert type(error).__name__ in capsys.readouterr().err  # its traceback is printed


def _ended(error) -> Future:
    task = Future()
    task.set_exception(error)
    return task


def test_what_the_last_callbacks_raised_is_taken_at_stop(capsys):
    """Callbacks that end while the executor shuts down: their exceptions are not left unread.

    rclpy prints "The following exception was never retrieved" for a task collected with an
    exception nobody took; at stop, a race is counted and anything else kept and printed.
    """
    executor = Raising([])
    race, bug = _ended(InvalidHandle('destruction was requested')), _ended(ValueError('bug'))
    executor._futures = [race, bug, Future()]  # the last: still running, left alone
    spinner = SpinThread([], executor)
    executor.spinning.wait(5.0)
    spinner.stop()
    assert race._exception_fetched and bug._exception_fetched
    assert (spinner.races, spinner.error) == (1, bug.exception())
    assert 'ValueError: bug' in capsys.readouterr().err

"""The exchanges behind vlm_client's verbs: one request, one checked reply, one reason.

Every reply is awaited with a deadline or while the node is still there, and every way a verb
can fail ends in ``ClientError`` (an exit status and one line for stderr). When the node refuses a
goal or a query, or a transition fails, the reason a user needs is its lifecycle state (its
``get_state`` service) and why its last configure failed (its /diagnostics status
``<node>: vlm``, key ``configure_error``; older nodes: ``last_error``).
"""

import re
import threading
import time
from collections.abc import Callable
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import get_parameter_value, parameter_value_to_python

# Exit statuses (documented in --help and docs/CLIENT.md).
OK, NOT_OK, BAD_INPUT, NOT_ACTIVE, NO_REPLY, INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = """exit status:
  0  done, and the answer is OK
  1  the node answered, not OK: a plan's status, a failed query, a refused transition or
     parameter value, no caption within --timeout
  2  bad input: usage, an unreadable image, no such node (nothing within --timeout), no such
     parameter, a node that does not caption
  3  the node is not active (or was deactivated while it answered): its state, and why
     its last configure failed
  4  no reply: the node went away or did not answer within --timeout, or the exchange failed
  130  interrupted (SIGINT, SIGTERM) before the answer: a plan's goal is cancelled;
     caption --follow, which runs until interrupted, exits 0 once it printed a caption
"""
TRANSITIONS = ('configure', 'activate', 'deactivate', 'cleanup', 'shutdown')
# rcl_interfaces/ParameterType's values, as a user writes the types (ros2 param describe)
TYPE_NAMES = {ParameterType.PARAMETER_BOOL: 'a boolean', ParameterType.PARAMETER_INTEGER:
              'an integer', ParameterType.PARAMETER_DOUBLE: 'a double',
              ParameterType.PARAMETER_STRING: 'a string',
              ParameterType.PARAMETER_BYTE_ARRAY: 'a byte array',
              ParameterType.PARAMETER_BOOL_ARRAY: 'a boolean array',
              ParameterType.PARAMETER_INTEGER_ARRAY: 'an integer array',
              ParameterType.PARAMETER_DOUBLE_ARRAY: 'a double array',
              ParameterType.PARAMETER_STRING_ARRAY: 'a string array'}
# s: /diagnostics comes once a second; a bit more covers a late message.
DIAGNOSTICS_WAIT = 2.5
# s without the node's server in the graph before a reply awaited without deadline is given
# up: the node went away (crashed, killed) and will never answer.
GONE_AFTER = 3.0
# s without the node's /diagnostics (said every second, in every state) after which a pending
# get_state of a followed node no longer counts as alive: the DDS graph keeps a killed node's
# services until its lease ends, some 20 s.
SILENT_AFTER = 3.0


class ClientError(Exception):
    """A verb's failure: the exit status and the one line that says why."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code


class Remote:
    """The node a verb talks to (``--node``), reached through a client-side rclpy node."""

    def __init__(self, node: Node, name: str, timeout: float):
        self.ros = node
        self.name = name
        self.timeout = timeout
        self._diag_lock = threading.Condition()
        self._diag = ({}, 0.0)  # values of the node's status, monotonic time received
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    # Waiting ---------------------------------------------------------------------------

    def wait(self, future, what: str, timeout: Optional[float] = None,
             alive: Optional[Callable[[], bool]] = None):
        """Return a future's result, waiting up to timeout, or (None) while alive() holds.

        An exception in the future (any type) becomes ``ClientError`` with its one-line text.
        """
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        deadline = None if timeout is None else time.monotonic() + timeout
        gone_since = None
        while not done.wait(0.5):
            now = time.monotonic()
            if deadline is not None and now > deadline:
                future.cancel()
                raise ClientError(NO_REPLY, f'{self.name} did not answer {what} within '
                                  f'{timeout:g} s')
            if alive is not None:
                gone_since = None if alive() else (gone_since or now)
                if gone_since is not None and now - gone_since > GONE_AFTER:
                    future.cancel()
                    raise ClientError(NO_REPLY, f'{self.name} went away before it answered {what}')
        exc = future.exception()
        if exc is not None:
            raise ClientError(NO_REPLY, f'{what} failed: {one_line(exc)}')
        return future.result()

    def absent(self, what: str) -> ClientError:
        """Say that the node's service or action server did not appear."""
        return ClientError(BAD_INPUT, f'no {self.name} node: its {what} did not appear within '
                           f'{self.timeout:g} s')

    def call(self, srv_type, service: str, request, timeout: Optional[float] = -1.0):
        """Call one of the node's services; timeout -1: --timeout; None: while it is there."""
        client = self.ros.create_client(srv_type, f'{self.name}/{service}')
        if not client.wait_for_service(timeout_sec=self.timeout):
            raise self.absent(f'{service} service')
        return self.wait(client.call_async(request), f'{service}',
                         self.timeout if timeout == -1.0 else timeout, client.service_is_ready)

    # Lifecycle -------------------------------------------------------------------------

    def state(self) -> str:
        """Return the node's lifecycle state label (its get_state service)."""
        return self.call(GetState, 'get_state', GetState.Request()).current_state.label

    def describe(self, state: str, since: float = 0.0) -> str:
        """Say the node's state and, when it has one, why its last configure failed.

        since: use only a /diagnostics message received after this monotonic time (one that
        reflects a transition just made).
        """
        values = self.diagnostics(since)
        error = values.get('configure_error')
        if error is None and state == 'unconfigured':  # a node without configure_error
            error = values.get('last_error')
        return f'{self.name} is {state}' + (f': configure failed: {error}' if error else '')

    def until_not_active(self, period: float) -> ClientError:
        """Look every period s whether the node is there and active; return why it stopped being.

        NOT_ACTIVE with its state (deactivated, shut down), or NO_REPLY once its get_state
        service has been gone GONE_AFTER s (the process ended), or its get_state goes
        unanswered with /diagnostics silent (killed: the graph still lists it for ~20 s).
        """
        client = self.ros.create_client(GetState, f'{self.name}/get_state')
        gone_since = None
        while True:
            time.sleep(period)
            if not client.service_is_ready():
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > GONE_AFTER:
                    return ClientError(NO_REPLY, f'{self.name} went away')
                continue
            gone_since = None
            state = self.wait(client.call_async(GetState.Request()), 'get_state', self.timeout,
                              lambda: client.service_is_ready() and self.heard_lately()
                              ).current_state.label
            if state != 'active':
                return ClientError(NOT_ACTIVE, self.describe(state))

    def not_active(self, refused: str) -> ClientError:
        """Explain a refusal: NOT_ACTIVE with the state and reason, else NOT_OK."""
        state = self.state()
        if state != 'active':
            return ClientError(NOT_ACTIVE, self.describe(state))
        return ClientError(NOT_OK, f'{self.name} {refused} although it is active')

    def transition(self, label: str) -> str:
        """Run a lifecycle transition by label; return the state after it, or fail saying why."""
        available = self.call(GetAvailableTransitions, 'get_available_transitions',
                              GetAvailableTransitions.Request()).available_transitions
        ids = {t.transition.label: t.transition.id for t in available}
        if label not in ids:
            state = self.state()
            raise ClientError(NOT_OK, f'cannot {label}: {self.describe(state)}; from {state}: '
                              f'{", ".join(sorted(ids)) or "no transition"}')
        # Loading a model may take minutes: waited for while the node is there.
        response = self.call(ChangeState, 'change_state',
                             ChangeState.Request(transition=Transition(id=ids[label])), None)
        answered = time.monotonic()
        state = self.state()
        if not response.success:
            raise ClientError(NOT_OK, f'could not {label}: {self.describe(state, answered)}')
        return state

    # Parameters ------------------------------------------------------------------------

    def parameter(self, name: str) -> ParameterValue:
        """Return a parameter's value; no such parameter: BAD_INPUT."""
        values = self.call(GetParameters, 'get_parameters',
                           GetParameters.Request(names=[name])).values
        if not values or values[0].type == ParameterType.PARAMETER_NOT_SET:
            raise ClientError(BAD_INPUT, f'{self.name} has no parameter {name!r}')
        return values[0]

    def set_parameter(self, name: str, text: str) -> None:
        """Set a parameter from its command-line text, typed like its current value."""
        value = parsed(text, self.parameter(name).type)
        results = self.call(SetParameters, 'set_parameters', SetParameters.Request(
            parameters=[Parameter(name=name, value=value)])).results
        if not results:
            raise ClientError(NO_REPLY, f'{self.name} answered set_parameters with no result')
        if not results[0].successful:
            raise ClientError(NOT_OK, f'{self.name} refused {name} = {text!r}: '
                              f'{readable(results[0].reason) or "no reason given"}')

    # Diagnostics -----------------------------------------------------------------------

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f'{self.name}: vlm':
                with self._diag_lock:
                    self._diag = ({kv.key: kv.value for kv in status.values}, time.monotonic())
                    self._diag_lock.notify_all()

    def heard_lately(self) -> bool:
        """Whether the node's /diagnostics came within SILENT_AFTER s (true if never heard)."""
        with self._diag_lock:
            received = self._diag[1]
        return not received or time.monotonic() - received < SILENT_AFTER

    def diagnostics(self, since: float = 0.0) -> dict:
        """Return the node's latest /diagnostics values received after since ({} if none)."""
        with self._diag_lock:
            self._diag_lock.wait_for(lambda: self._diag[1] > since, DIAGNOSTICS_WAIT)
            values, received = self._diag
        return values if received > since else {}


def parsed(text: str, current: int) -> ParameterValue:
    """Parse VALUE as ros2 param set does, typed like the current value (typed).

    An integer no parameter can hold is BAD_INPUT: rclpy takes any whole number and fails
    only as it sends it (a SystemError), or in an array as it parses it (an OverflowError).
    """
    try:
        value = typed(get_parameter_value(text), current, text)
    except OverflowError:
        value = None
    if value is None or (value.type == ParameterType.PARAMETER_INTEGER and
                         not -2**63 <= value.integer_value < 2**63):
        raise ClientError(BAD_INPUT, f'{text[:60]!r} holds a whole number out of the range of a '
                          '64-bit integer')
    return value


def typed(value: ParameterValue, current: int, text: str) -> ParameterValue:
    """Type a parsed value like the parameter's current value, where the text allows it.

    ``ros2 param set`` parses VALUE as a YAML scalar; here a whole number given for a double
    becomes that double, and anything given for a string is that string (a model directory
    named 123, a key 'true'). Other mismatches go as parsed: the node refuses them, saying why.
    """
    if current == ParameterType.PARAMETER_STRING and value.type != current:
        return ParameterValue(type=current, string_value=text)
    if current == ParameterType.PARAMETER_DOUBLE and value.type != current:
        try:
            return ParameterValue(type=current, double_value=float(text))
        except ValueError:
            return value
    if current == ParameterType.PARAMETER_DOUBLE_ARRAY and \
            value.type == ParameterType.PARAMETER_INTEGER_ARRAY:
        return ParameterValue(type=current,
                              double_array_value=[float(v) for v in value.integer_array_value])
    return value


def readable(reason: str) -> str:
    """Say rclpy's type refusal with the types' names.

    Kilted's rclpy writes the types' numbers (expected '3' got '4'), Jazzy's their enum names
    (expected 'Type.DOUBLE' got 'Type.STRING').
    """
    match = re.fullmatch(r"Wrong parameter type, expected '(?:Type\.)?(\w+)' got "
                         r"'(?:Type\.)?(\w+)'", reason)
    if match is None:
        return reason
    expected, got = (TYPE_NAMES.get(int(kind) if kind.isdigit() else
                                    getattr(ParameterType, f'PARAMETER_{kind}', None),
                                    f'type {kind}') for kind in match.groups())
    return f'the value must be {expected}; it reads as {got}'


def format_value(value: ParameterValue) -> str:
    """Render a parameter value as ``ros2 param set`` would take it back."""
    python = parameter_value_to_python(value)
    if isinstance(python, bool):
        return str(python).lower()
    if isinstance(python, (list, tuple)) or type(python).__name__ == 'array':
        return '[' + ', '.join(format_scalar(v) for v in python) + ']'
    return str(python)


def format_scalar(value) -> str:
    """Render one array element (bools lower case, as YAML writes them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def one_line(exc: BaseException) -> str:
    """Render an exception as one line: its type and its text."""
    text = ' '.join(str(exc).split())
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__

"""rclpy's own request handlers, guarded: a malformed request is refused, never fatal.

Every node has rclpy's parameter services (and a lifecycle node its lifecycle services),
whose handlers run before any of this project's code can look at a request. One of them
raises on a value any peer on the DDS domain can send: a SetParameters request whose
ParameterValue type is not a ParameterType (42, say) raises ValueError in
Parameter.from_parameter_msg, and rclpy's executor re-raises it from spin_once: the process
ended, exit 1. ``guard_rclpy_services`` wraps each such handler: such a request is refused
whole before rclpy sets any of its values (it sets them one by one), and anything else a
handler raises is logged with its traceback (throttled) and the request answered as refused.
"""

import traceback

from rcl_interfaces.msg import ParameterType, SetParametersResult
from rcl_interfaces.srv import SetParameters, SetParametersAtomically

LOG_THROTTLE = 5.0  # s between two logs of refused requests
PARAMETER_TYPES = frozenset(value for name, value in vars(ParameterType).items()
                            if name.startswith('PARAMETER_') and isinstance(value, int))


def guard_rclpy_services(node) -> None:
    """Wrap the handler of each service rclpy itself made on node."""
    for service in node.services:
        callback = service.callback
        if getattr(callback, '__module__', '').startswith('rclpy.'):
            service.callback = _guarded(callback, service, node.get_logger())


def _guarded(callback, service, logger):
    def handle(request, response):
        malformed = unreadable_values(request)
        if malformed:  # before rclpy applies the request's good values one by one
            logger.warning(f'{service.srv_name}: refused a {malformed}',
                           throttle_duration_sec=LOG_THROTTLE)
            return refusal(service.srv_type, request, malformed)
        try:
            return callback(request, response)
        except Exception as exc:  # noqa: BLE001 - the request is refused, the process lives
            logger.error(f'{service.srv_name}: refused a request rclpy could not handle:\n'
                         f'{traceback.format_exc()}', throttle_duration_sec=LOG_THROTTLE)
            return refusal(service.srv_type, request, f'{type(exc).__name__}: {exc}'[:300])
    handle.__module__ = __name__  # guarded once: a second guard_rclpy_services leaves it
    return handle


def unreadable_values(request) -> str:
    """Say which parameter of a set request has a value of no ParameterType ('' if none)."""
    for parameter in getattr(request, 'parameters', ()):  # SetParameters(Atomically)'s
        kind = parameter.value.type
        if kind not in PARAMETER_TYPES:
            return (f'malformed request: parameter {parameter.name[:100]!r} has a value of type '
                    f'{kind}, which is no ParameterType (0 to {max(PARAMETER_TYPES)})')
    return ''


def refusal(srv_type, request, reason: str):
    """Return the response that refuses request: each parameter unset, with the reason.

    Other services' empty responses say no (lifecycle change_state: success False) or give
    nothing.
    """
    response = srv_type.Response()
    failed = SetParametersResult(successful=False, reason=reason)
    if srv_type is SetParameters:
        response.results = [failed] * len(request.parameters)
    elif srv_type is SetParametersAtomically:
        response.result = failed
    return response

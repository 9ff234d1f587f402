"""rclpy's own request handlers, guarded: a malformed request is refused, never fatal.

Every node has rclpy's parameter services (and a lifecycle node its lifecycle services),
whose handlers run before any of this project's code can look at a request. One of them
raises on a value any peer on the DDS domain can send: a SetParameters request whose
ParameterValue type is not a ParameterType (42, say) raises ValueError in
Parameter.from_parameter_msg, and rclpy's executor re-raises it from spin_once: the process
ended, exit 1. ``guard_rclpy_services`` wraps each such handler: what it raises is logged
(throttled) and the request answered as refused.
"""

from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters, SetParametersAtomically

LOG_THROTTLE = 5.0  # s between two logs of refused requests


def guard_rclpy_services(node) -> int:
    """Wrap the handler of each service rclpy itself made on node; return how many."""
    guarded = 0
    for service in node.services:
        callback = service.callback
        if getattr(callback, '__module__', '').startswith('rclpy.'):
            service.callback = _guarded(callback, service, node.get_logger())
            guarded += 1
    return guarded


def _guarded(callback, service, logger):
    def handle(request, response):
        try:
            return callback(request, response)
        except Exception as exc:  # noqa: BLE001 - the request is refused, the process lives
            reason = f'malformed request: {type(exc).__name__}: {str(exc)[:200]}'
            logger.warning(f'{service.srv_name}: refused a {reason}',
                           throttle_duration_sec=LOG_THROTTLE)
            return refusal(service.srv_type, request, reason)
    handle.__module__ = __name__  # guarded once: a second guard_rclpy_services leaves it
    return handle


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

"""Why vlm_node refuses requests now: its lifecycle state, and why a configure failed."""


def not_ready(serving: bool, name: str, state: str, configure_error: str) -> str:
    """Say why requests cannot be served now, or '' when they can (serving: the worker runs).

    Callers get the lifecycle state and, after a failed configure, its reason: 'not
    active' alone leaves an operator guessing whether to configure, activate or fix a
    parameter.
    """
    if serving:
        return ''
    reason = f'{name} is {state}'
    if state == 'unconfigured' and configure_error:
        reason += f': configure failed: {configure_error}'
    return reason

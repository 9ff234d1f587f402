"""vlm_node's parameters over its life: the launch values, then each change at run time.

The node reads the values (node.py, the only part that reads parameters by name) and keeps the
Settings these return; its parts read that Settings, never a parameter.
"""

from collections.abc import Callable
from typing import Optional

from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from . import params
from .settings import Settings, SettingsError


def declare_all(declare: Callable, overrides: dict) -> dict:
    """Declare every parameter with ``declare`` (the node's); return why ROS refused a value.

    rclpy checks a launch value (``overrides``: command line, params files, launch files)
    against the descriptor's type and range as it declares the parameter, and raises: the
    process ended with a traceback before the node could say why. Such a parameter is declared
    with its default instead, and the reason (params.validate's, by name) fails every
    configure, as launch_settings' own do, until a parameter change replaces the value.
    """
    refused = {}
    for spec in params.SPECS:
        default, descriptor = params.declared_default(spec), params.descriptor(spec)
        try:
            declare(spec.name, default, descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            declare(spec.name, default, descriptor, ignore_override=True)
            given = params.typed(spec.name, overrides[spec.name].value)
            refused[spec.name] = params.validate(spec.name, given) or str(exc)
    return refused


def launch_settings(values: dict, refused: dict) -> tuple[Settings, dict]:
    """Build the first Settings from the launch values (ROS checked types and ranges).

    ``refused`` holds why ROS refused a value (declare_all). Returns the Settings and, by name,
    those reasons and the ones params.validate gives: such a value keeps its default here and
    fails every configure, with the reason, until a parameter change replaces it (accept).
    """
    refused = {**refused, **{name: reason for name, value in values.items()
                             if (reason := params.validate(name, value)) is not None}}
    settings = Settings.from_values(
        {name: value for name, value in values.items() if name not in refused})
    return settings, refused


def accept(settings: Settings, changes, refused: dict, model_loaded: bool,
           apply: Callable[[Settings, dict], None],
           logger) -> tuple[SetParametersResult, Settings]:
    """Build the new Settings, apply each run-time group (params.APPLIES); return the one to keep.

    A change refused (by validation, or because applying it failed) returns settings, so the
    parts read what they read before. An accepted change takes its names out of refused, and
    a value it leaves without effect (another setting switches it off, the backend does not
    use it) is said now, as configure says the launch values', not at the next configure.
    """
    # rclpy undeclares a dynamically typed parameter (skills, cameras) that a change leaves
    # unset once the node accepts it: every later get or set then failed until a restart.
    unset = [change.name for change in changes
             if change.name in params.BY_NAME and change.type_ == Parameter.Type.NOT_SET]
    if unset:
        return SetParametersResult(successful=False, reason=(
            f'{", ".join(unset)}: no value given (a parameter cannot be unset)')), settings
    values = {change.name: params.typed(change.name, change.value) for change in changes
              if change.name in params.BY_NAME}  # not use_sim_time: rclpy checks that
    try:
        changed = settings.changed(values, model_loaded=model_loaded)
        apply(changed, values)
    except SettingsError as exc:
        return SetParametersResult(successful=False, reason=str(exc)), settings
    except Exception as exc:  # noqa: BLE001 - refused with the reason; the node lives on
        logger.error(f'applying {sorted(values)} failed: {exc!r}')
        return SetParametersResult(successful=False, reason=f'cannot apply: {exc!r}'), settings
    for name in values:
        refused.pop(name, None)
    before = set(settings.without_effect())
    newly = [clause for clause in changed.without_effect() if clause not in before]
    if newly:
        logger.warning(f'no effect: {"; ".join(newly)}')
    return SetParametersResult(successful=True), changed


def keep_types(changes, describe: Callable, current: Callable) -> None:
    """Give the parameters of a refused change their own type back in their descriptors.

    rclpy types a dynamically typed parameter's descriptor (a string array, an on/off choice)
    by the value it is asked to take before the node can refuse it: ``ros2 param describe``
    then told the refused value's type, beside the value kept.
    """
    for change in changes:
        descriptor = describe(change.name)
        if descriptor.dynamic_typing:
            descriptor.type = current(change.name).type_.value


def apply(settings: Settings, values: dict, engine, worker, topics,
          subscribe_images: Optional[Callable[[Settings], None]]) -> None:
    """Apply the groups of the changed values to the engine, limits, timers or images.

    Each group goes to the parts that exist now: engine is None while unconfigured, worker
    and subscribe_images (the camera input) are None while not active.
    """
    groups = {params.BY_NAME[name].applies for name in values}
    if 'engine' in groups and engine is not None:
        engine.update(**settings.run_time_engine_fields())
    if 'limits' in groups and worker is not None:
        worker.limits = settings.limits()
    if 'timers' in groups and worker is not None:
        topics.start_timers(settings)
        if 'caption_rate' in values and values['caption_rate'] > 0:
            topics.caption_due()  # the first caption now, not one period later
    if 'images' in groups and subscribe_images is not None:
        subscribe_images(settings)

"""The settings a run answered under, for the summary and the report: what differs from defaults.

Two reports compare only when their settings do, and a list of forty parameters hides the
three that were changed. So the summary keeps the model and device, and every setting whose
value is not vlm_node's default (node/params.py), with that default beside it. A live node's
settings are its parameters, recorded beside its answers (bag/node_settings.py); an offline
run's are the EngineConfig vlm_eval loaded, compared with the node's defaults where the node
has the same setting, so an offline run and a live one read alike.
"""

import dataclasses
import json
from typing import Optional

from ..engine import EngineConfig
from ..node.params import BY_NAME, processor_kwargs, typed

# Parameters every rclpy node has; the rest of a node's parameters are in node/params.py.
ROS_DEFAULTS = {'use_sim_time': False}
ALWAYS = ('model', 'device')  # shown even at their defaults: no run is read without them


def _settings(source: str, values: dict, defaults: dict) -> dict:
    """Keep ALWAYS, then every value not at its default by name; the defaults beside them."""
    names = [name for name in ALWAYS if name in values] + sorted(
        name for name, value in values.items()
        if name not in ALWAYS and name in defaults and value != defaults[name])
    changed = {name: values[name] for name in names}
    return {'source': source, 'values': changed,
            'defaults': {name: defaults.get(name) for name in changed}}


def node_settings(recorded: Optional[dict]) -> Optional[dict]:
    """Return the settings of a recorded node's parameters (None: none were recorded).

    Parameters of other nodes' kinds (not in node/params.py) have no known default and are
    left out.
    """
    if recorded is None:
        return None
    defaults = {**ROS_DEFAULTS, **{name: spec.default for name, spec in BY_NAME.items()}}
    values = {name: typed(name, value) for name, value in recorded['parameters'].items()}
    return _settings(f'parameters of {recorded.get("node", "the node")}', values, defaults)


def _node_default(name: str, fallback):
    """Return the node's default of an EngineConfig field, in the field's own form."""
    spec = BY_NAME.get(name)
    if spec is None:
        return fallback
    if name == 'processor_kwargs':
        return processor_kwargs(spec.default)
    if name == 'attn_implementation':
        return spec.default or None
    return spec.default


def engine_settings(config: EngineConfig) -> dict:
    """Return the settings of an offline run's EngineConfig (its remote part left out)."""
    values, defaults = {}, {}
    for field in dataclasses.fields(EngineConfig):
        if field.name == 'remote':
            continue
        fallback = field.default if field.default is not dataclasses.MISSING else \
            (field.default_factory() if field.default_factory is not dataclasses.MISSING
             else None)
        values[field.name] = getattr(config, field.name)
        defaults[field.name] = _node_default(field.name, fallback)
    settings = _settings("vlm_eval's EngineConfig", values, defaults)
    for part in ('values', 'defaults'):  # dicts as the node's JSON parameters write them
        settings[part] = {name: json.dumps(value) if isinstance(value, dict) else value
                          for name, value in settings[part].items()}
    return settings

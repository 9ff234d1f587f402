"""The node's parameters as one frozen, typed object: what its parts read, never by name.

params.SPECS is the one source: the fields below are checked against it when this module is
imported (same names, same order, each typed as its spec's default), and every Settings is
validated by params.validate when it is made. So a Settings always holds acceptable values; a
misspelt setting is an AttributeError at once (and a linter's error before that), and which
part depends on which setting is written in its code. The node builds a new Settings for each
accepted parameter change and hands it to its parts (node.py); a refused change leaves the old
one in place.
"""

import dataclasses
from collections.abc import Mapping
from typing import Optional

from ..engine.config import EngineConfig, RemoteConfig
from ..engine.features import FeatureSpec
from . import params
from .jobs import Limits

# What one backend reads and the other never does: the engine configuration's in-process
# fields (EngineConfig) and its RemoteConfig.
BACKEND_ONLY = {'transformers': ('device', 'dtype', 'attn_implementation', 'decode_mode',
                                 'cpu_threads', 'trust_remote_code', 'local_files_only',
                                 'processor_kwargs'),
                'openai': ('base_url', 'remote_model', 'api_key_env', 'request_timeout',
                           'max_retries', 'max_concurrency', 'jpeg_quality')}
# Settings another one's value switches off, whichever backend: name -> ((the switch as the
# warning says it, whether a Settings throws it, why the setting then does nothing), ...).
# Only one worker thread batches and looks ahead (scheduler.Worker: the openai backend has
# max_concurrency), the openai backend makes no features (remote/engine.py), and only step
# checks read verify_by and prompt_verify (plan_runner.py; ~/execute_plan checks steps too).
_THREADS = ('backend:=openai with max_concurrency > 1',
            lambda settings: settings.backend == 'openai' and settings.max_concurrency > 1)
_OPENAI = ('backend:=openai', lambda settings: settings.backend == 'openai')
_NO_CHECKS = ('verify_steps:=false', lambda settings: not settings.verify_steps)
_NO_FEATURES = 'that backend makes no features; ~/features answers that it cannot'
SWITCHED_OFF = {
    'max_batch_size': ((*_THREADS, 'each request starts on a thread of its own, and the '
                        'server batches them'),),
    'batch_wait': (('max_batch_size:=1', lambda settings: settings.max_batch_size == 1,
                    'no batch waits for company'),
                   (*_THREADS, 'each request starts on a thread of its own')),
    'preprocess_ahead': ((*_THREADS, 'only a single worker thread looks ahead'),),
    'features_layer': ((*_OPENAI, _NO_FEATURES),),
    'features_pooling': ((*_OPENAI, _NO_FEATURES),),
    'features_dtype': ((*_OPENAI, _NO_FEATURES),),
    'max_feature_bytes': ((*_OPENAI, _NO_FEATURES),),
    'verify_by': ((*_NO_CHECKS, 'only step checks read it'),),
    'prompt_verify': ((*_NO_CHECKS, 'only step checks use it'),),
}


class SettingsError(ValueError):
    """Values that are no parameter of vlm_node, or that their specs refuse (and why)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """One value per parameter of params.SPECS, typed as its default; see there for meanings."""

    model: str
    device: str
    dtype: str
    attn_implementation: str
    decode_mode: str
    cpu_threads: int
    trust_remote_code: bool
    local_files_only: bool
    backend: str
    base_url: str
    remote_model: str
    api_key_env: str
    request_timeout: float
    max_retries: int
    max_concurrency: int
    jpeg_quality: int
    autostart: bool
    constrain_plans: str
    skills: tuple
    max_new_tokens: int
    processor_kwargs: str
    max_image_side: int
    image_transport: str
    image_reliability: str
    use_depth: bool
    cameras: tuple
    max_skew: float
    instruction_qos_depth: int
    max_image_pixels: int
    publish_features: bool
    features_layer: int
    features_pooling: str
    features_dtype: str
    max_feature_bytes: int
    max_batch_size: int
    batch_wait: float
    preprocess_ahead: bool
    max_text_chars: int
    min_confidence: float
    max_image_age: float
    wait_for_image: float
    caption_rate: float
    features_rate: float
    replan_period: float
    queue_size: int
    execute_plans: bool
    step_timeout: float
    max_replans: int
    verify_steps: bool
    verify_by: str
    prompt_caption: str
    prompt_vqa: str
    prompt_plan: str
    prompt_replan: str
    prompt_verify: str
    prompt_ground: str

    def __post_init__(self):
        """Refuse what params.validate refuses: a Settings holds acceptable values only."""
        reason = params.validate_all(dataclasses.asdict(self))
        if reason:
            raise SettingsError(reason)
        if self.backend != 'transformers' and (self.publish_features or self.features_rate):
            raise SettingsError(f'publish_features and features_rate need the transformers '
                                f'backend: the '
                                f"{self.backend} one cannot see the model's hidden states")
        if self.backend != 'transformers' and self.verify_by == 'likelihood':
            raise SettingsError(f'verify_by likelihood needs the transformers backend: the '
                                f'{self.backend} one cannot score answers; use verify_by answer')

    @classmethod
    def from_values(cls, values: Optional[Mapping] = None) -> 'Settings':
        """Return the settings with values (name -> value) over the specs' defaults.

        Raises SettingsError naming what is no parameter or not acceptable, and why.
        """
        values = dict(values or {})
        _refuse_unknown(values)
        return cls(**{spec.name: values.get(spec.name, spec.default) for spec in params.SPECS})

    def changed(self, values: Mapping, model_loaded: bool = False) -> 'Settings':
        """Return a copy with values changed, or raise SettingsError (self stays as it is).

        With model_loaded, parameters that need a model reload are refused (params.validate).
        """
        values = dict(values)
        _refuse_unknown(values)
        reason = params.validate_all(values, model_loaded)
        if reason:
            raise SettingsError(reason)
        return dataclasses.replace(self, **values)

    def prompts(self) -> dict:
        """Return the prompt templates by task ('' = the built-in one)."""
        return {task: getattr(self, name) for name, task in params.PROMPT_PARAMS.items()}

    def limits(self) -> Limits:
        """Return the worker's limits."""
        return Limits(self.wait_for_image, self.max_image_age, self.queue_size,
                      self.max_text_chars, self.max_batch_size, self.batch_wait,
                      self.preprocess_ahead, self.min_confidence, self.max_skew,
                      FeatureSpec(self.features_layer, self.features_pooling),
                      self.publish_features)

    def run_time_engine_fields(self) -> dict:
        """Return the engine settings a running engine takes (EngineBase.update)."""
        return {'max_new_tokens': self.max_new_tokens, 'max_image_side': self.max_image_side,
                'prompts': self.prompts(), 'skills': self.skills}

    def unused_by_backend(self) -> list:
        """Return 'name:=value' of each setting away from its default that the backend ignores.

        ``device:=cuda`` with the openai backend, or a base_url with the in-process one, would
        otherwise look as if it were used.
        """
        return [self._said(name) for backend, names in BACKEND_ONLY.items()
                if backend != self.backend for name in names
                if getattr(self, name) != params.BY_NAME[name].default]

    def switched_off(self) -> list:
        """Return 'name:=value while switch (why)' of each setting another one switches off.

        Each is set away from its default and changes nothing while the switch holds
        (SWITCHED_OFF): a params file shared across robots may carry it, so it is said, not
        refused; ``batch_wait:=0.05`` with ``max_batch_size:=1`` would otherwise look used.
        """
        said = []
        for name, switches in SWITCHED_OFF.items():
            if getattr(self, name) == params.BY_NAME[name].default:
                continue
            thrown = [(switch, why) for switch, holds, why in switches if holds(self)]
            said += [f'{self._said(name)} while {switch} ({why})' for switch, why in thrown[:1]]
        return said

    def without_effect(self) -> list:
        """Return what unused_by_backend and switched_off say, as clauses of one warning."""
        unused = [f'{said} (the {self.backend} backend does not use it)'
                  for said in self.unused_by_backend()]
        return unused + self.switched_off()

    def _said(self, name: str) -> str:
        """Return 'name:=value' as it is written on the command line (true, not True)."""
        value = getattr(self, name)
        return f'{name}:={str(value).lower() if isinstance(value, bool) else value}'

    def engine_config(self) -> EngineConfig:
        """Return the engine's whole configuration."""
        remote = RemoteConfig(
            base_url=self.base_url, model=self.remote_model, api_key_env=self.api_key_env,
            request_timeout=self.request_timeout, max_retries=self.max_retries,
            max_concurrency=self.max_concurrency, jpeg_quality=self.jpeg_quality)
        return EngineConfig(
            model=self.model, device=self.device, dtype=self.dtype,
            attn_implementation=self.attn_implementation or None,
            trust_remote_code=self.trust_remote_code, local_files_only=self.local_files_only,
            processor_kwargs=params.processor_kwargs(self.processor_kwargs),
            decode_mode=self.decode_mode, cpu_threads=self.cpu_threads,
            constrain_plans=self.constrain_plans,
            backend=self.backend, remote=remote,
            **self.run_time_engine_fields())


def _refuse_unknown(values: Mapping) -> None:
    unknown = sorted(name for name in values if name not in params.BY_NAME)
    if unknown:
        raise SettingsError(params.unknown_parameters(unknown)
                            or f'not settings of vlm_node: {", ".join(unknown)}')


def _check_fields_match_specs() -> None:
    """Raise TypeError when the fields and params.SPECS disagree (run at import)."""
    fields = {field.name: field.type for field in dataclasses.fields(Settings)}
    specs = {spec.name: type(spec.default) for spec in params.SPECS}
    if list(fields.items()) != list(specs.items()):
        differ = sorted(name for name in fields.keys() | specs.keys()
                        if fields.get(name) is not specs.get(name))
        raise TypeError('Settings fields differ from params.SPECS in '
                        f"{', '.join(differ) or 'order'}: one field per spec, typed as its "
                        "default, in the specs' order")


_check_fields_match_specs()

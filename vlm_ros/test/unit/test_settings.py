"""The node's Settings: one typed, frozen value per parameter spec, always a valid one."""

import dataclasses

import pytest
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.node import params, settings
from vlm_ros.node.settings import Settings, SettingsError


def test_settings_from_no_values_are_the_specs_defaults():
    assert dataclasses.asdict(Settings.from_values()) == \
        {spec.name: spec.default for spec in params.SPECS}


def test_each_field_is_a_spec_typed_as_its_default_in_the_specs_order():
    fields = dataclasses.fields(Settings)
    assert [field.name for field in fields] == [spec.name for spec in params.SPECS]
    for field, spec in zip(fields, params.SPECS, strict=True):
        assert field.type is type(spec.default), spec.name


def test_a_misspelt_setting_is_an_attribute_error_at_once():
    with pytest.raises(AttributeError, match='execute_plan'):
        Settings.from_values().execute_plan  # noqa: B018 - the read is the test


def test_settings_are_frozen():
    current = Settings.from_values()
    with pytest.raises(dataclasses.FrozenInstanceError):
        current.queue_size = 3
    assert current.queue_size == params.BY_NAME['queue_size'].default


def test_a_change_makes_new_settings_and_leaves_the_old_ones():
    old = Settings.from_values({'queue_size': 5})
    new = old.changed({'queue_size': 6, 'execute_plans': True, 'replan_period': 0.01})
    assert (new.queue_size, new.execute_plans, new.replan_period) == (6, True, 0.01)
    assert (old.queue_size, old.execute_plans) == (5, False)


@pytest.mark.parametrize(('values', 'loaded', 'reason'), [
    ({'queue_size': 0}, False, 'queue_size must be within [1, 1000]'),
    ({'queue_size': 3, 'caption_rate': 1}, False,
     'caption_rate must be a double, written with a decimal point (e.g. 1.0); got 1'),
    ({'skills': 'pick'}, False, "skills must be a string array, e.g. [pick, place]; got 'pick'"),
    ({'max_new_tokens': 'abc'}, False, "max_new_tokens must be an integer; got 'abc'"),
    ({'dtype': 'float8'}, False, 'dtype must be one of'),
    ({'processor_kwargs': '[1]'}, False, 'processor_kwargs must be a JSON object'),
    ({'prompt_plan': 'no placeholder'}, False, 'prompt template'),
    # A timer that fires all the time burns a core: a period of 0 (off) or 0.01 s at least.
    ({'replan_period': 1e-9}, False, 'replan_period must be 0 (off) or 0.01 s at least: 1e-09'),
    ({'model': '/elsewhere'}, True, 'model needs a model reload'),
    ({'modle': '/elsewhere'}, False, "'modle' (did you mean 'model'?)"),
])
def test_a_refused_change_says_why_and_leaves_the_old_settings(values, loaded, reason):
    old = Settings.from_values({'queue_size': 9})
    with pytest.raises(SettingsError) as refused:
        old.changed(values, model_loaded=loaded)
    assert reason in str(refused.value)
    assert old == Settings.from_values({'queue_size': 9})


def test_settings_never_hold_a_value_the_specs_refuse():
    good = dataclasses.asdict(Settings.from_values())
    with pytest.raises(SettingsError, match='image_transport must be one of'):
        Settings(**{**good, 'image_transport': 'carrier pigeon'})
    with pytest.raises(SettingsError, match="'max_new_token' \\(did you mean"):
        Settings.from_values({'max_new_token': 3})


def test_likelihood_checks_need_a_backend_that_scores_and_min_confidence_does_not():
    reason = 'verify_by likelihood needs the transformers backend: the openai one cannot score'
    with pytest.raises(SettingsError, match=reason):
        Settings.from_values({'backend': 'openai', 'verify_by': 'likelihood'})
    remote = Settings.from_values({'backend': 'openai'})
    with pytest.raises(SettingsError, match=reason):
        remote.changed({'verify_by': 'likelihood'})
    assert Settings.from_values().changed({'verify_by': 'likelihood'}).verify_by == 'likelihood'
    # Servers that send logprobs (vLLM, SGLang) give confidences; the others' plans say so.
    assert remote.changed({'min_confidence': 0.5}).min_confidence == 0.5


def test_features_need_a_backend_that_sees_hidden_states_and_reach_plan_requests():
    reason = 'publish_features and features_rate need the transformers backend: the openai one'
    for asked in ({'publish_features': True}, {'features_rate': 2.0}):
        with pytest.raises(SettingsError, match=reason):
            Settings.from_values({'backend': 'openai', **asked})
        with pytest.raises(SettingsError, match=reason):
            Settings.from_values({'backend': 'openai'}).changed(asked)
    assert not Settings.from_values().limits().publish_features, 'off by default'
    on = Settings.from_values({'publish_features': True, 'features_layer': 3,
                               'features_pooling': 'tokens'}).limits()
    assert on.publish_features and on.features == FeatureSpec(3, 'tokens')


def test_engine_config_limits_and_prompts_come_from_the_settings():
    current = Settings.from_values({'max_new_tokens': 7, 'queue_size': 3, 'batch_wait': 0.25,
                                    'prompt_plan': 'Plan: {instruction}', 'backend': 'openai',
                                    'remote_model': 'served', 'processor_kwargs': '{"a": 1}'})
    config = current.engine_config()
    assert (config.max_new_tokens, config.backend, config.remote.model) == \
        (7, 'openai', 'served')
    assert config.prompts['plan'] == 'Plan: {instruction}' and config.prompts['vqa'] == ''
    assert config.processor_kwargs == {'a': 1} and config.attn_implementation is None
    limits = current.limits()
    assert (limits.queue_size, limits.batch_wait) == (3, 0.25)


def test_fields_that_drift_from_the_specs_fail_the_import(monkeypatch):
    extra = params.ParamSpec('frame_budget', 3, 'a spec added without its field')
    monkeypatch.setattr(params, 'SPECS', (*params.SPECS, extra))
    with pytest.raises(TypeError, match='frame_budget'):
        settings._check_fields_match_specs()
    retyped = tuple(dataclasses.replace(spec, default=float(spec.default))
                    if spec.name == 'queue_size' else spec for spec in params.SPECS[:-1])
    monkeypatch.setattr(params, 'SPECS', retyped)
    with pytest.raises(TypeError, match='queue_size'):
        settings._check_fields_match_specs()


def test_settings_the_backend_does_not_read_are_named_once_set():
    assert Settings.from_values().unused_by_backend() == []
    assert Settings.from_values({'device': 'cuda', 'jpeg_quality': 50}).unused_by_backend() == \
        ['jpeg_quality:=50']
    remote = Settings.from_values({'backend': 'openai', 'device': 'cuda', 'base_url': 'http://h/v1',
                                   'decode_mode': 'auto', 'processor_kwargs': '{"a": 1}'})
    assert remote.unused_by_backend() == ['device:=cuda', 'processor_kwargs:={"a": 1}']
    # One warning says both kinds: the backend's unused values, then those switched off
    assert Settings.from_values({'backend': 'openai', 'device': 'cuda', 'batch_wait': 0.05,
                                 'max_concurrency': 1}).without_effect() == \
        ['device:=cuda (the openai backend does not use it)',
         'batch_wait:=0.05 while max_batch_size:=1 (no batch waits for company)']


THREADS = 'backend:=openai with max_concurrency > 1'
ONE_THREAD = {'backend': 'openai', 'max_concurrency': 1}
# Each switch of settings.SWITCHED_OFF: (a value away from the setting's default, settings
# that throw the switch, settings that do not).
SWITCHES = {
    ('max_batch_size', THREADS): (8, {'backend': 'openai'}, ({}, ONE_THREAD)),
    ('batch_wait', 'max_batch_size:=1'): (0.05, {}, ({'max_batch_size': 4},)),
    ('batch_wait', THREADS): (0.05, {'backend': 'openai', 'max_batch_size': 4},
                              ({'max_batch_size': 4}, {**ONE_THREAD, 'max_batch_size': 4})),
    ('preprocess_ahead', THREADS): (True, {'backend': 'openai', 'max_concurrency': 2},
                                    ({}, ONE_THREAD)),
    **{(name, 'backend:=openai'): (value, {'backend': 'openai'}, ({},))
       for name, value in (('features_layer', 3), ('features_pooling', 'mean'),
                           ('features_dtype', 'float16'), ('max_feature_bytes', 2048))},
    ('verify_by', 'verify_steps:=false'): ('likelihood', {}, ({'verify_steps': True},)),
    ('prompt_verify', 'verify_steps:=false'): ('Is {step} done?', {},
                                               ({'verify_steps': True},)),
}


def test_every_switch_that_turns_a_setting_off_is_tested():
    assert sorted(SWITCHES) == sorted((name, switch) for name, switches in
                                      settings.SWITCHED_OFF.items() for switch, _, _ in switches)


def _said_of(name: str, values: dict) -> list:
    return [clause for clause in Settings.from_values(values).switched_off()
            if clause.startswith(f'{name}:=')]


@pytest.mark.parametrize('name, switch', sorted(SWITCHES))
def test_a_setting_switched_off_by_another_is_said_only_while_it_is_set_and_off(name, switch):
    value, thrown, kept = SWITCHES[name, switch]
    shown = str(value).lower() if isinstance(value, bool) else value
    said = _said_of(name, {**thrown, name: value})
    assert len(said) == 1 and said[0].startswith(f'{name}:={shown} while {switch} ('), said
    assert _said_of(name, thrown) == []  # at its default it is not set: nothing to say
    for values in kept:  # the switch does not hold: the value acts
        assert _said_of(name, {**values, name: value}) == [], values


def test_each_setting_switched_off_is_said_once_with_its_switch_and_why():
    assert Settings.from_values().switched_off() == []
    assert Settings.from_values({'batch_wait': 0.05, 'verify_by': 'likelihood',
                                 'preprocess_ahead': True}).switched_off() == \
        ['batch_wait:=0.05 while max_batch_size:=1 (no batch waits for company)',
         'verify_by:=likelihood while verify_steps:=false (only step checks read it)']
    # Both of batch_wait's switches hold: the first is said
    assert _said_of('batch_wait', {'backend': 'openai', 'batch_wait': 0.05}) == \
        ['batch_wait:=0.05 while max_batch_size:=1 (no batch waits for company)']

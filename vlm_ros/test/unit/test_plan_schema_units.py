"""The plan schema from the skills parameter, and what a hostile skills list gets back."""

import json

import pytest
from vlm_ros.engine import VlmError
from vlm_ros.engine.plan_parser import parse_plan
from vlm_ros.engine.plan_schema import (
    MAX_ARGS,
    MAX_SKILLS,
    MAX_STEPS,
    Skill,
    follows,
    parse_skills,
    plan_schema,
    schema_key,
    takes_arguments,
)


def test_skills_become_the_enum_of_every_steps_skill():
    step = plan_schema(('pick', 'place'))['properties']['steps']['items']
    assert step['properties']['skill'] == {'enum': ['pick', 'place']}
    assert step['required'] == ['instruction', 'skill', 'target']  # the prompt's own order
    assert not step['additionalProperties']


def test_without_skills_the_skill_is_free_text():
    step = plan_schema()['properties']['steps']['items']
    assert step['properties']['skill']['type'] == 'string'


def test_a_plan_of_the_schema_parses_as_json():
    text = '{"steps": [{"instruction": "pick up the cup", "skill": "pick", "target": "cup"}]}'
    plan = parse_plan(text)
    assert plan.valid and plan.form == 'json' and plan.steps[0].skill == 'pick'


def test_the_cache_key_changes_with_the_skills_and_the_cameras():
    assert schema_key(('pick',)) == schema_key(('pick',)) != schema_key(('place',))
    assert schema_key(('pick',), ('head',)) not in (schema_key(('pick',)),
                                                     schema_key(('pick',), ('wrist',)))


def test_a_step_names_one_of_the_requests_cameras_and_a_lone_image_none():
    step = plan_schema(('pick',), ('head', 'wrist'))['properties']['steps']['items']
    assert step['properties']['camera'] == {'enum': ['head', 'wrist']}
    assert 'camera' not in plan_schema(('pick',))['properties']['steps']['items']['properties']
    named = {'instruction': 'go', 'skill': 'pick', 'target': 'cup', 'camera': 'wrist'}
    assert follows(json.dumps({'steps': [named]}), ('pick',), ('head', 'wrist'))
    assert not follows(json.dumps({'steps': [named]}), ('pick',), ('left', 'right'))
    assert not follows(json.dumps({'steps': [named]}), ('pick',))


@pytest.mark.parametrize(('skills', 'reason'), [
    ('pick', 'list of names'), ([3], 'list of names'), (['pick up'], 'not a name'),
    (['9lives'], 'not a name'), ([''], 'not a name'), (['x' * 49], 'not a name'),
    (['pick', 'pick'], 'pick more than once'), ([f's{k}' for k in range(MAX_SKILLS + 1)],
                                                f'at most {MAX_SKILLS}')])
def test_hostile_skills_are_refused_with_the_reason(skills, reason):
    with pytest.raises(VlmError, match=reason) as refused:
        parse_skills(skills)
    assert refused.value.kind == 'bad_input'


def test_names_are_kept_in_order_without_blanks_around_them():
    assert tuple(s.name for s in parse_skills([' pick', 'place ', 'push-down', 'go_to'])) == \
        ('pick', 'place', 'push-down', 'go_to')


def test_a_skill_may_name_its_arguments_in_brackets():
    assert parse_skills(['pick(object)', ' place ( object ,location ) ', 'push', 'wait()']) == (
        Skill('pick', ('object',)), Skill('place', ('object', 'location')), Skill('push'),
        Skill('wait'))
    assert takes_arguments(['pick(object)', 'push']) and not takes_arguments(['pick', 'wait()'])


@pytest.mark.parametrize(('skills', 'reason'), [
    (['pick(object'], 'not a name'), (['pick)'], 'not a name'), (['pick(a b)'], 'arguments'),
    (['pick(a, a)'], 'arguments'), ([f'go({", ".join(f"a{k}" for k in range(MAX_ARGS + 1))})'],
                                    f'up to {MAX_ARGS}'), (['pick(a,)'], 'arguments'),
    (['pick(a)', 'pick(b)'], 'pick more than once')])
def test_hostile_arguments_are_refused_with_the_reason(skills, reason):
    with pytest.raises(VlmError, match=reason) as refused:
        parse_skills(skills)
    assert refused.value.kind == 'bad_input'


ARGUMENT_SKILLS = ('pick(object)', 'place(object, location)', 'push', 'wait')


def test_skills_with_arguments_make_a_kind_of_step_each():
    kinds = plan_schema(ARGUMENT_SKILLS)['properties']['steps']['items']['anyOf']
    assert [kind['properties']['skill']['enum'] for kind in kinds] == \
        [['push', 'wait'], ['pick'], ['place']]
    assert 'args' not in kinds[0]['properties']
    place = kinds[2]
    assert place['required'] == ['instruction', 'skill', 'target', 'args']
    assert place['properties']['args']['required'] == ['object', 'location']
    assert not place['properties']['args']['additionalProperties']


def _step(instruction, skill, target, **args) -> dict:
    step = {'instruction': instruction, 'skill': skill, 'target': target}
    return {**step, 'args': args} if args else step


@pytest.mark.parametrize(('steps', 'followed'), [
    ([_step('put it', 'place', 'cup', object='cup', location='tray'),
      _step('push it', 'push', 'box')], True),
    ([_step('get it', 'pick', '', object='')], True),  # '': the model gave none
    ([_step('put it', 'place', 'cup', object='cup')], False),  # location missing
    ([_step('put it', 'place', 'cup', object='cup', location='tray', speed='1')], False),
    ([_step('push it', 'push', 'box', object='box')], False),  # push takes none
    ([_step('get it', 'pick', 'cup')], False),  # pick needs its object
    ([_step('put it', 'place', 'cup', object='cup', location=3)], False)])
def test_steps_follow_the_schema_with_exactly_their_skills_arguments(steps, followed):
    assert follows(json.dumps({'steps': steps}), ARGUMENT_SKILLS) is followed


def test_a_steps_arguments_are_parsed_in_order():
    text = json.dumps({'steps': [_step('put it', 'place', 'cup', object='cup', location='tray'),
                                 _step('push it', 'push', 'box')]})
    steps = parse_plan(text).steps
    assert steps[0].args == (('object', 'cup'), ('location', 'tray')) and steps[1].args == ()


def _plan(*steps, **extra) -> str:
    return json.dumps({'steps': [dict(zip(('instruction', 'skill', 'target'), step, strict=True))
                                 for step in steps], **extra})


BOXED = '{"steps": [{"instruction": "pick it", "skill": "pick", "target": "cup", "bbox_2d": %s}]}'
FOLLOWED = [_plan(('pick up the cup', 'pick', 'cup')),
            _plan(('wait here', 'place', '')),  # '': no object
            _plan(*[('push it', 'push', 'box')] * MAX_STEPS),
            BOXED % '[0, 12, 640, 9999]']  # a box is optional: a server can ground its steps
NOT_FOLLOWED = [
    '', 'pick up the cup', '{"steps": ', _plan(), _plan(('pick up the cup', 'grab', 'cup')),
    _plan(*[('push it', 'push', 'box')] * (MAX_STEPS + 1)), _plan(('', 'pick', 'cup')),
    _plan(('x' * 65, 'pick', 'cup')), _plan(('pick', 'pick', 'c' * 33)),
    _plan(('pick up the cup', 'pick', 'cup'), note='extra key'), '[{"steps": []}]',
    '{"steps": [{"instruction": "pick it", "skill": "pick"}]}',  # target missing
    '{"steps": [{"instruction": 1, "skill": "pick", "target": "cup"}]}',
    '{"steps": [{"instruction": "pick it", "skill": ["pick"], "target": "cup"}]}',
    _plan(('pick up the cup', 'pick', 'cup')) + ' and then', '[' * 100000,
    BOXED % '[0, 12, 640]', BOXED % '[0.5, 12, 640, 480]', BOXED % '[-1, 12, 640, 480]',
    BOXED % '[0, 12, 640, 10000]', BOXED % '[true, 12, 640, 480]']


@pytest.mark.parametrize('text', FOLLOWED)
def test_a_plan_in_the_skills_follows_the_schema(text):
    assert follows(text, ('pick', 'place', 'push'))


@pytest.mark.parametrize('text', NOT_FOLLOWED)
def test_anything_else_does_not_follow_it(text):
    assert not follows(text, ('pick', 'place', 'push'))


def test_without_skills_any_skill_text_follows():
    assert follows(_plan(('pick up the cup', 'grab', 'cup')))
    assert not follows(_plan(('pick up the cup', 'g' * 33, 'cup')))

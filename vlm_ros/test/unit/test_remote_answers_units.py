"""What the openai backend asks a server for, and how it reads what came back.

A server may follow ``response_format`` and send ``logprobs`` (vLLM, SGLang) or ignore both
(transformers serve, checked against the real server in test_remote_engine.py). Here the
answers are the openai package's own chunk types, parsed from the JSON a server streams.
"""

import asyncio
import json
import math

import numpy as np
import pytest
from openai.types.chat import ChatCompletionChunk
from vlm_ros.engine import EngineConfig, RemoteConfig, Request
from vlm_ros.engine.plan_schema import plan_schema
from vlm_ros.engine.prompts import load_templates
from vlm_ros.engine.remote.answers import answer_result
from vlm_ros.engine.remote.payload import chat_payload
from vlm_ros.engine.remote.streaming import Answer, read_answer

FRAME = np.zeros((24, 32, 3), np.uint8)
PLAN = json.dumps({'steps': [{'instruction': 'push the box', 'skill': 'push',
                              'target': 'box'}]})


def _config(**fields) -> EngineConfig:
    return EngineConfig(model='m', backend='openai', skills=('pick', 'push'),
                        remote=RemoteConfig(base_url='http://127.0.0.1:9/v1'), **fields)


@pytest.mark.parametrize('task', ['plan', 'replan'])
def test_plans_ask_for_the_schema_of_the_skills_and_every_answer_for_logprobs(task):
    payload = chat_payload(Request(task, FRAME, 'push the box', context={
        'done': '', 'failed': ''}), _config(), load_templates(), 'm')
    assert payload['response_format'] == {'type': 'json_schema', 'json_schema': {
        'name': 'plan', 'strict': True, 'schema': plan_schema(('pick', 'push'))}}
    assert payload['logprobs'] is True


@pytest.mark.parametrize('task, mode', [('caption', 'auto'), ('vqa', 'on'), ('plan', 'off')])
def test_captions_answers_and_plans_under_off_ask_for_no_schema(task, mode):
    payload = chat_payload(Request(task, FRAME, 'what is it?'), _config(constrain_plans=mode),
                           load_templates(), 'm')
    assert 'response_format' not in payload and payload['logprobs'] is True


def test_several_cameras_go_to_the_server_each_after_its_name():
    wrist = np.full((12, 16, 3), 255, np.uint8)
    payload = chat_payload(Request('vqa', None, 'what is it?', cameras=(
        ('head', FRAME), ('wrist', wrist))), _config(), load_templates(), 'm')
    parts = payload['messages'][0]['content']
    assert [part['type'] for part in parts] == ['text', 'image_url', 'text', 'image_url', 'text']
    assert (parts[0]['text'], parts[2]['text']) == ('head:', 'wrist:')
    assert parts[1] != parts[3] and 'what is it?' in parts[4]['text']


def test_a_plan_of_several_cameras_asks_for_steps_that_name_one_of_them():
    request = Request('plan', None, 'push the box', cameras=(('head', FRAME), ('wrist', FRAME)))
    payload = chat_payload(request, _config(), load_templates(), 'm')
    schema = payload['response_format']['json_schema']['schema']
    assert schema == plan_schema(('pick', 'push'), ('head', 'wrist'))
    step = {'instruction': 'push the box', 'skill': 'push', 'target': 'box'}
    for camera, followed in (('wrist', True), ('hand', False)):
        text = json.dumps({'steps': [{**step, 'camera': camera}]})
        result = answer_result(request, Answer(pieces=[text]), False, 0.0, 0.1, _config())
        assert (result.form == 'constrained') is followed, camera


class _Stream:
    """The chunks of one streamed answer, as the openai client yields them."""

    def __init__(self, chunks):
        # Built as the client builds them (no strict validation): a hostile server's 'high'
        # for a number arrives as it was sent.
        self._chunks = [ChatCompletionChunk.construct(**chunk) for chunk in chunks]

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        for chunk in self._chunks:
            yield chunk


class _Completions:
    def __init__(self, chunks):
        self.chunks = chunks

    async def create(self, **payload):
        return _Stream(self.chunks)


class _Client:
    """Stands where openai.AsyncOpenAI stands; what it yields is a server's JSON, as parsed."""

    def __init__(self, chunks):
        self.chat = type('Chat', (), {'completions': _Completions(chunks)})()


def _chunk(text, logprobs=None, finish=None) -> dict:
    choice = {'index': 0, 'delta': {'content': text}, 'finish_reason': finish}
    if logprobs is not None:
        choice['logprobs'] = {'content': [{'token': token, 'logprob': value, 'bytes': None,
                                           'top_logprobs': []} for token, value in logprobs]}
    return {'id': 'c', 'object': 'chat.completion.chunk', 'created': 0, 'model': 'm',
            'choices': [choice]}


def _read(chunks) -> Answer:
    answer = Answer()
    done = asyncio.run(read_answer(_Client(chunks), {'max_tokens': 64}, answer, None, _never(),
                                   timeout=10.0))
    assert done
    return answer


def _never():
    return type('Never', (), {'is_set': staticmethod(lambda: False)})()


def _pieces(text: str, size: int = 7) -> list:
    return [text[start:start + size] for start in range(0, len(text), size)]


def test_a_plan_that_follows_the_schema_is_constrained_with_the_servers_confidence():
    pieces = _pieces(PLAN)
    values = [-0.1 * (index + 1) for index in range(len(pieces))]
    answer = _read([*(_chunk(piece, [(piece, value)]) for piece, value in zip(
        pieces, values, strict=True)), _chunk('', finish='stop')])
    result = answer_result(Request('plan', FRAME, 'push the box'), answer, False, 0.0, 1.0,
                           _config())
    assert (result.valid, result.form, result.note) == (True, 'constrained', '')
    assert result.token_logprobs == pytest.approx(values)
    assert result.confidence == pytest.approx((sum(values) / len(values), min(values)))
    assert not math.isnan(result.step_confidence[0][0])


@pytest.mark.parametrize('mode, valid', [('auto', True), ('on', False)])
def test_a_plan_outside_the_schema_says_the_server_did_not_follow_it(mode, valid):
    text = PLAN.replace('push', 'shove')  # not one of the skills
    answer = _read([_chunk(piece) for piece in _pieces(text)] + [_chunk('', finish='stop')])
    result = answer_result(Request('plan', FRAME, 'shove the box'), answer, False, 0.0, 1.0,
                           _config(constrain_plans=mode))
    assert result.form == 'json' and result.valid is valid
    assert bool(result.steps) is valid  # under 'on' its steps are not passed on
    assert 'http://127.0.0.1:9/v1 did not follow the plan schema' in result.note
    assert ('not used' if mode == 'on' else 'steps read from free text') in result.note
    assert all(math.isnan(value) for value in result.confidence)  # no logprobs were sent


@pytest.mark.parametrize('mode, then', [
    ('auto', '; no plan steps could be parsed'),
    ('on', ': constrain_plans is on, so it is not used')])
def test_a_plan_with_no_steps_outside_the_schema_never_says_steps_were_read(mode, then):
    answer = _read([_chunk('There is no box to push here.'), _chunk('', finish='stop')])
    result = answer_result(Request('plan', FRAME, 'push the box'), answer, False, 0.0, 1.0,
                           _config(constrain_plans=mode))
    assert (result.valid, result.steps) == (False, ())
    assert result.note == 'http://127.0.0.1:9/v1 did not follow the plan schema ' \
        f'(response_format){then}'


def test_under_off_a_free_plan_has_no_note():
    answer = _read([_chunk(PLAN.replace('push', 'shove')), _chunk('', finish='stop')])
    result = answer_result(Request('plan', FRAME, 'x'), answer, False, 0.0, 1.0,
                           _config(constrain_plans='off'))
    assert (result.form, result.note, result.valid) == ('json', '', True)


@pytest.mark.parametrize('logprobs', [
    [('{"st', 'high')], [('{"st', 0.5)], [('{"st', math.nan)], [(7, -0.1)],
    [('other text', -0.1)], []])
def test_malformed_or_mismatched_logprobs_make_the_confidence_unknown(logprobs):
    answer = _read([_chunk('{"st', [(t, v) for t, v in logprobs] if logprobs else None),
                    _chunk('eps": []}', [('eps": []}', -0.2)]), _chunk('', finish='stop')])
    assert answer.text_logprobs() == ((), ())

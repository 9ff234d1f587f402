"""One streamed answer to a Result: the plan schema checked, the server's logprobs kept.

A server may ignore what the request asked for (the plan schema as response_format, logprobs):
transformers serve does, with a warning. So a plan is never trusted to follow the schema: it
is checked (plan_schema.follows), and the Result says what happened instead. So is an answer
that streaming.py cut because the server went past max_tokens.
"""

from dataclasses import replace

from .. import plan_schema
from ..config import EngineConfig
from ..grounding import views_of
from ..plan_schema import PLAN_TASKS
from ..preprocess import fitted_size
from ..results import Result, make_result
from .payload import schema_asked
from .streaming import Answer


def answer_result(request, answer: Answer, cancelled: bool, start: float, total: float,
                  config: EngineConfig) -> Result:
    """Parse one answer (timings from start; total seconds); check a plan against the schema.

    A plan that follows it has form 'constrained'. One that does not (the server ignored
    response_format) is read as free text with a note saying so; under constrain_plans 'on'
    it is not valid and keeps no steps (a Plan of STATUS_INVALID_OUTPUT carries none), and the
    note says why. An answer cut where the server went past max_tokens counts as one that
    ran out of tokens there, and its note says so.
    """
    text = ''.join(answer.pieces)
    asked = schema_asked(request, config) and not cancelled
    followed = asked and plan_schema.follows(text, tuple(config.skills),
                                             request.camera_names())
    tokens = answer.ignored_limit or (len(answer.pieces) if answer.tokens is None else
                                      answer.tokens)
    result = make_result(request.task, text, tokens,
                         answer.first_at - start if answer.first_at else total, total,
                         cancelled, fitted_size(request.image, config.max_image_side),
                         followed, *answer.text_logprobs(),
                         views=views_of(None, request, config.max_image_side))
    refused = asked and not followed and config.constrain_plans == 'on'
    if refused:  # its steps are not to be executed: none are passed on
        result = replace(result, valid=False, steps=(), step_confidence=(), boxes=(),
                         box_problems=(), box_cameras=(), box_labels=())
    result.note = '; '.join(_notes(request.task, result, answer, asked and not followed,
                                   refused, config.remote.base_url))
    return result


def _notes(task: str, result: Result, answer: Answer, unfollowed: bool, refused: bool,
           url: str) -> list:
    """Say what the server did other than asked, for the Plan's or response's message.

    Where the answer is not valid, the notes become the whole reason (node/batches.py): a
    plan without steps then says so too.
    """
    notes = []
    if answer.ignored_limit:
        notes.append(f'{url} ignored max_tokens {answer.ignored_limit}: it sent more, and the '
                     'answer was cut there')
    if unfollowed:
        then = ': constrain_plans is on, so it is not used' if refused else \
            ': steps read from free text' if result.steps else ''
        notes.append(f'{url} did not follow the plan schema (response_format){then}')
    if notes and task in PLAN_TASKS and not result.steps and not refused:
        notes.append('no plan steps could be parsed')
    return notes

"""What each request service asks the worker: its Job, or the reason it is refused at once.

Anything on the DDS domain can call the services, so a request that cannot be served (an
unknown task, no candidates, too many cameras) is refused before it takes a place in the
queue; the worker refuses what needs the node's state to judge (camera names, sizes).
"""

from typing import Union

from .jobs import PROMPT_TASKS, Job
from .params import MAX_CAMERAS


def _image(request):
    """Return the request's image message, or None: width 0 means the latest camera frame."""
    return request.image if request.image.width else None


def query_job(request) -> Job:
    """Return the Job of a ~/query request: a question on its image or the latest frame."""
    return Job('vqa', request.question.strip(), done=None, image_msg=_image(request),
               max_new_tokens=request.max_new_tokens)


def cameras_job(request) -> Union[Job, str]:
    """Return the Job of a ~/query_cameras request, or why it is refused."""
    if len(request.cameras) > MAX_CAMERAS:
        return f'{len(request.cameras)} cameras named; at most {MAX_CAMERAS}'
    return Job('vqa', request.question.strip(), done=None,
               max_new_tokens=request.max_new_tokens,
               cameras=tuple(name.strip() for name in request.cameras))


def ground_job(request) -> Job:
    """Return the Job of a ~/ground request: the boxes of what its phrase names.

    In the image of the camera the request names (the first where it names none).
    """
    camera = request.camera.strip()
    return Job('ground', request.phrase.strip(), done=None, image_msg=_image(request),
               cameras=(camera,) if camera else ())


def score_job(request) -> Union[Job, str]:
    """Return the Job of a ~/score request (its candidates scored), or why it is refused."""
    task = request.task.strip() or 'vqa'
    if task not in PROMPT_TASKS:
        return f'task {task[:40]!r} cannot be scored; use one of {", ".join(PROMPT_TASKS)}'
    if not request.candidates:
        return 'no candidates to score'
    return Job(task, request.prompt.strip(), done=None, image_msg=_image(request),
               candidates=tuple(request.candidates))


def features_job(request) -> Union[Job, str]:
    """Return the Job of a ~/features request (its prompt's features), or why it is refused."""
    task = request.task.strip() or 'plan'
    if task not in PROMPT_TASKS:
        return f'task {task[:40]!r} has no prompt to take features of; use one of ' \
            f'{", ".join(PROMPT_TASKS)}'
    # A caption's prompt holds no text: none is echoed as the features' instruction.
    text = '' if task == 'caption' else request.text.strip()
    return Job(task, text, done=None, image_msg=_image(request), max_new_tokens=1,
               features_only=True)

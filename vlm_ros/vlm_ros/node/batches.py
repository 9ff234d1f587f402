"""One batch of jobs answered: each job's image, one engine run, exactly one outcome per job.

The Worker (scheduler.py) decides which waiting jobs run together and when; this decides what
each of them is answered, whatever happens: it picks the image (an explicit one, or the latest
fresh camera frame), runs the engine once for the batch, and turns each result, refusal or
failure into the job's Outcome.
"""

import math
from collections.abc import Callable

from ..engine import Request, Result, VlmError
from ..engine.plan_schema import PLAN_TASKS
from .frames import FrameSet, StampGaps, skew
from .jobs import Job, Limits, Outcome, Status


def cameras_asked(job: Job, names: tuple) -> tuple:
    """Return the names of the cameras job is answered from (none: every camera).

    A ~/ground answer's boxes are in one camera's image: the model is shown that camera alone
    (the one the request names, or the first), and no other camera is waited for.
    """
    if job.task == 'ground':
        return job.cameras[:1] or (names[:1] if len(names) > 1 else ())
    return job.cameras


class BatchRunner:
    """Answer the jobs of one batch: those without an image at once, the rest in one engine run.

    ``limits()``, ``convert()`` (explicit images to RGB), ``no_image_hint(cameras)`` (why no
    frame came) are read at each use: the node changes them at run time. ``batches`` and
    ``batched`` count the engine runs and the requests they answered: the batching ratio.
    """

    def __init__(self, engine, frames: FrameSet, now: Callable[[], float],
                 limits: Callable[[], Limits], convert: Callable[[], Callable],
                 no_image_hint: Callable[[list], str]):
        self._engine = engine
        self._frames = frames
        self._now = now
        self._limits = limits
        self._convert = convert
        self._no_image_hint = no_image_hint
        self.batches = 0
        self.batched = 0

    def serve(self, jobs: list) -> list:
        """Return one outcome per job: those without an image at once, the rest batched.

        A ~/score job (candidates) is one forward pass of its own, never batched with others.
        """
        outcomes, ready = [], []
        for job in jobs:
            found = self._prepared(job)
            if isinstance(found, Outcome):
                outcomes.append(found)
            elif job.candidates:
                outcomes.append(self._scored(*found))
            else:
                ready.append(found)
        if not ready:
            return outcomes
        if len(ready) > 1:
            try:
                return outcomes + self._answered(ready)
            except Exception as exc:  # noqa: BLE001 - answered as statuses, never silence
                if not (isinstance(exc, VlmError) and exc.kind == 'bad_input'):
                    return outcomes + [failed(job, header, exc)
                                       for job, header, _ in ready]
                # One request the processor refused fails its batch: answer each on its own.
        for item in ready:
            try:
                outcomes += self._answered([item])
            except Exception as exc:  # noqa: BLE001 - answered as a status, never silence
                outcomes.append(failed(item[0], item[1], exc))
        return outcomes

    def _fresh(self, frame) -> bool:
        max_age = self._limits().max_image_age
        return max_age <= 0 or self._now() - frame.stamp <= max_age

    def _image(self, job: Job):
        """Return (header, rgb) for job, or an Outcome saying why there is none.

        With several cameras, rgb is the (name, rgb) pairs of a frame per camera (each camera,
        or those job.cameras names), and header the first one's; the job keeps every used
        camera's header (sources) and their skew.
        """
        if job.image_msg is not None:
            return self._given(job)
        try:
            chosen = self._frames.select(cameras_asked(job, self._frames.names))
        except ValueError as exc:
            return Outcome(job, Status.BAD_INPUT, str(exc))
        names = [self._frames.names[index] for index in chosen]
        limits = self._limits()
        wait = limits.wait_for_image if job.waits else min(limits.wait_for_image, limits.max_skew)
        frames = self._frames.wait_for(self._fresh, limits.max_skew, wait, job.cancel.is_set,
                                       chosen)
        if job.cancel.is_set():
            return Outcome(job, Status.CANCELLED, job.cancel_reason)
        several = len(self._frames.names) > 1  # named cameras: each image after its name
        if several and None not in frames:
            job.sources = tuple((name, frame.header)
                                for name, frame in zip(names, frames, strict=True))
            job.skew = skew(frames)
        refused = self._refused(job, names, frames, limits, wait)
        if refused is not None:
            return refused
        images = []
        for name, index, frame in zip(names, chosen, frames, strict=True):
            store = self._frames.stores[index]
            found = converted(job, frame.header, store.image, frame)
            if isinstance(found, Outcome):
                if several:
                    found.message = f'camera {name}: {found.message}'
                return found
            images.append((name, found[1]))
        return frames[0].header, tuple(images) if several else images[0][1]

    def _given(self, job: Job):
        """Return (header, rgb) of job's own image, or the Outcome saying why it is refused.

        A job that names a camera (~/ground's camera) takes its image as that camera's, so its
        boxes get that camera's depth: ((name, rgb),) then, with the name checked.
        """
        header = job.image_msg.header
        found = (header, job.converted) if job.converted is not None else \
            converted(job, header, self._convert(), job.image_msg)  # unless the look-ahead did
        if isinstance(found, Outcome) or not job.cameras:
            return found
        try:
            self._frames.select(job.cameras[:1])
        except ValueError as exc:
            return Outcome(job, Status.BAD_INPUT, str(exc), header)
        return header, ((job.cameras[0], found[1]),)

    def _refused(self, job: Job, names: list, frames: list, limits: Limits, wait: float):
        """Return the Outcome of frames that cannot be used (none, stale, skewed), or None."""
        missing = [name for name, frame in zip(names, frames, strict=True) if frame is None]
        if missing:
            hint = self._no_image_hint(missing)
            which = f' from camera {", ".join(missing)}' if names != [''] else ''
            return Outcome(job, Status.NO_IMAGE, f'no image arrived{which} within {wait:g} s' +
                           (f': {hint}' if hint else ''))
        named = list(zip(names, frames, strict=True))
        stale = [(name, frame) for name, frame in named if not self._fresh(frame)]
        if stale:
            name, frame = stale[0]
            which = f"camera {name}'s " if names != [''] else ''
            return Outcome(job, Status.STALE_IMAGE, f'{which}latest image is '
                           f'{self._now() - frame.stamp:.2f} s old (max_image_age '
                           f'{limits.max_image_age:g} s) and no fresh one arrived within '
                           f'{wait:g} s', frames[0].header)
        if len(frames) > 1 and 0 < limits.max_skew < job.skew:
            return unsynchronized(job, named, limits.max_skew, wait, self._now())
        return None

    def _prepared(self, job: Job):
        """Return (job, header, Request) ready to run, or the Outcome that answers job now."""
        try:
            if job.cancel.is_set():
                return Outcome(job, Status.CANCELLED, job.cancel_reason)
            found = self._image(job)
            if isinstance(found, Outcome):
                return found
            header, image = found
            if job.cancel.is_set():  # e.g. while the frame was converted
                return Outcome(job, Status.CANCELLED, job.cancel_reason, header)
        except Exception as exc:  # noqa: BLE001 - answered as a model error, never silence
            return failed(job, None, exc)
        # A request may ask for fewer tokens than the node allows, never for more.
        limit = self._engine.config.max_new_tokens
        tokens = min(job.max_new_tokens, limit) if job.max_new_tokens > 0 else 0
        cameras = image if isinstance(image, tuple) else ()
        job.frame_sizes = tuple((name, rgb.shape[1::-1]) for name, rgb in cameras or [('', image)])
        limits = self._limits()
        asked = job.features_only or (job.task in PLAN_TASKS and limits.publish_features)
        features = limits.features if asked else None
        return job, header, Request(job.task, None if cameras else image, job.text, tokens,
                                    on_text=job.on_text, cancel=job.cancel,
                                    context=job.context, cameras=cameras, features=features)

    def _answered(self, ready: list) -> list:
        """Run the requests of ready in one engine call; return their outcomes in order."""
        # Each request carries its own text stream and cancel (engine.Request).
        results = self._engine.run([request for _, _, request in ready])
        self.batches += 1
        self.batched += len(ready)
        return [self._outcome(job, header, result)
                for (job, header, _), result in zip(ready, results, strict=True)]

    def _scored(self, job: Job, header, request: Request) -> Outcome:
        """Score each of job's candidates as the answer to its request, in one forward pass."""
        try:
            scores = self._engine.score([request] * len(job.candidates), list(job.candidates))
        except Exception as exc:  # noqa: BLE001 - answered as a status, never silence
            return failed(job, header, exc)
        return Outcome(job, Status.OK, '', header, scores=scores)

    def _outcome(self, job: Job, header, result: Result) -> Outcome:
        if result.cancelled:
            return Outcome(job, Status.CANCELLED, f'{job.cancel_reason} during generation',
                           header, result)
        if job.features_only:  # ~/features: the prompt's features are the answer, not its text
            return Outcome(job, Status.OK, '', header, result)
        if not result.valid:
            what = result.note or _nothing_read(job.task, result)
            return Outcome(job, Status.INVALID_OUTPUT, f'model output invalid: {what}', header,
                           result)
        least = self._limits().min_confidence
        sure = math.exp(result.confidence[0])
        note = result.note  # e.g. a fallback the backend took
        if job.task in PLAN_TASKS and sure < least:
            return Outcome(job, Status.LOW_CONFIDENCE, f'confidence {sure:.3f} (geometric mean '
                           f'token probability) is below min_confidence {least:g}', header,
                           result)
        if job.task in PLAN_TASKS and least > 0.0 and math.isnan(sure):
            note = '; '.join(filter(None, (note, 'confidence unknown (the server sent no '
                                           'logprobs): min_confidence not applied')))
        return Outcome(job, Status.OK, note, header, result)


def unsynchronized(job: Job, named: list, max_skew: float, wait: float, now: float) -> Outcome:
    """Return the UNSYNCHRONIZED outcome of job's (camera name, Frame) pairs, with the skew.

    The camera behind is named where it sent nothing newer for longer than the wait: a camera
    that stopped is the likelier cause then, which max_skew alone cannot tell.
    """
    stamps = ', '.join(f'{name} {frame.stamp:.3f}' for name, frame in named)
    behind, oldest = min(named, key=lambda item: item[1].stamp)
    age = now - oldest.stamp
    stopped = f'; camera {behind} sent nothing newer for {age:.1f} s: has it stopped? ' \
        '(max_image_age answers its frames STATUS_STALE_IMAGE)' \
        if age > max(wait, StampGaps.PAUSE) else ''
    return Outcome(job, Status.UNSYNCHRONIZED, f"the cameras' latest frames are {job.skew:.3f} "
                   f's apart ({stamps}); max_skew is {max_skew:g} s and no closer ones arrived '
                   f'within {wait:g} s{stopped}', named[0][1].header)


def converted(job: Job, header, convert: Callable, source):
    """Return (header, rgb), or a BAD_INPUT outcome that still names the bad image."""
    try:
        return header, convert(source)
    except VlmError as exc:
        return Outcome(job, Status.BAD_INPUT, str(exc), header)


def failed(job: Job, header, exc: Exception) -> Outcome:
    """Return the outcome of a job the engine failed: its kind's status, and the reason."""
    if isinstance(exc, VlmError):
        status = Status.BAD_INPUT if exc.kind == 'bad_input' else Status.MODEL_ERROR
        return Outcome(job, status, str(exc), header, text_refused=exc.about == 'text')
    return Outcome(job, Status.MODEL_ERROR, f'inference failed: {exc!r}', header)


def _nothing_read(task: str, result: Result) -> str:
    """Say what could not be read from a valid-less answer of task."""
    if task == 'plan':
        return 'no plan steps could be parsed'
    if task == 'ground':
        problems = '; '.join(filter(None, result.box_problems))
        return 'no box could be read from the answer' + (f' ({problems})' if problems else '')
    return 'empty answer'

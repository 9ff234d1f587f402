"""The query, ground and score services and the generate_plan action: requests awaiting answers.

Both exist for the node's whole life, in every lifecycle state: a service that disappears on
deactivate leaves its callers waiting for it, one that answers "not active" tells them why.

The action uses the accepted/execute pattern (ros2/examples server_queue_goals.py): an
accepted goal becomes a job for the worker and holds no executor thread; when the worker has
answered it, the goal is executed, and the execute callback only turns the outcome into the
result. Cancel requests reach the job at once, and goals whose client has left the graph are
cancelled (nobody would take their result). The service must return its response from its
callback (rclpy has no deferred response), so its callback is a coroutine: it awaits the
worker's answer as an rclpy Future, and the executor thread is free meanwhile (a blocking wait
held one of the executor's threads per waiting call: 40 calls starved everything else). A call
with no answer after answer_timeout() cancels its job, and after CANCEL_GRACE more is refused.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Optional, Union

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import Executor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from vlm_ros_msgs.action import GeneratePlan
from vlm_ros_msgs.srv import GetFeatures, Ground, Query, QueryCameras, Score

from ..compat import execute_goal, steady_timer
from .features_msg import fill_features_response
from .goal_book import (
    CLIENT_CHECK_PERIOD,
    CLIENT_GONE,
    RESULT_TIMEOUT,
    GoalBook,
    Orphans,
    action_clients,
)
from .jobs import Job, Outcome, Status
from .messages import (
    fill_cameras_response,
    fill_ground_response,
    fill_query_response,
    fill_score_response,
    plan_msg,
)
from .scheduler import Worker, cancel_job
from .service_jobs import cameras_job, features_job, ground_job, query_job, score_job

CANCEL_GRACE = 5.0  # s a given-up query waits for its cancelled job's answer
# The default service QoS keeps the last 10 requests: an 11th arriving before the executor
# takes them overwrites one, and its caller waits forever. Every request is kept instead, and
# one the worker has no room for is answered at once (STATUS_DROPPED, queue full).
REQUESTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
CANCELLED_BY_CLIENT = 'cancelled by the action client'


def action_server(node, action_type, name: str, group, **callbacks) -> ActionServer:
    """Serve an action as both of the node's servers do.

    Every request is kept (REQUESTS_QOS), and an ended goal's result RESULT_TIMEOUT s.
    """
    return ActionServer(node, action_type, name, goal_service_qos_profile=REQUESTS_QOS,
                        result_service_qos_profile=REQUESTS_QOS,
                        cancel_service_qos_profile=REQUESTS_QOS, callback_group=group,
                        result_timeout=RESULT_TIMEOUT, **callbacks)


@dataclass
class _Query:
    """A ~/query call awaiting its answer."""

    job: Job
    answered: Future
    deadline: float  # time.monotonic() past which its job is cancelled
    cancelled: bool = False


@dataclass(frozen=True)
class Serving:
    """What the request endpoints need of the node, each called when it is needed.

    ``worker()`` returns the active node's Worker or None; ``not_ready()`` says why requests
    cannot be served ('' when they can); ``record(outcome)`` counts an answer in the
    diagnostics; ``model_name()`` is the model answers are attributed to; ``header()`` is the
    fallback header of plans that used no image; ``companions(outcome, plan)`` publishes what
    goes out just before a Plan (its PlanConfidence and PlanArguments), or with plan None, the
    AnswerConfidence of a ~/query answer or the detections of a ~/ground answer;
    ``points(outcome, placed)`` the 3D point (or why none) of each (box, camera) of a ~/ground
    answer or a plan's targets, with use_depth ([] without);
    ``features(outcome)`` the Features message of a ~/features answer.
    """

    worker: Callable[[], Optional[Worker]]
    not_ready: Callable[[], str]
    record: Callable[[Outcome], None]
    model_name: Callable[[], str]
    header: Callable[[], Header]
    companions: Callable[[Outcome, object], None]
    points: Callable[[Outcome, list], list]
    features: Callable[[Outcome], object]


class RequestEndpoints:
    """The node's ~/query, ~/ground and ~/score services and ~/generate_plan action server.

    ``node`` only creates them (and the client-check timer); what serving needs comes from
    ``serving``. ``answer_timeout()`` bounds how long a query may wait; ``executor()`` is the
    node's executor, which resumes a query awaiting its answer.
    """

    def __init__(self, node, serving: Serving, answer_timeout: Callable[[], float],
                 executor: Callable[[], Executor]):
        self._serving = serving
        self._worker = serving.worker
        self._not_ready = serving.not_ready
        self._record = serving.record
        self._answer_timeout = answer_timeout
        self._executor = executor
        self._lock = threading.Lock()
        self._goals = GoalBook()  # records: [job, outcome or None]
        self._queries = {}  # id(job) -> _Query, while unanswered
        group = ReentrantCallbackGroup()
        # Each service: its type, name, the Job a request asks for (service_jobs.py), and
        # how the outcome fills its response.
        served = ((Query, '~/query', query_job, fill_query_response),
                  (QueryCameras, '~/query_cameras', cameras_job, fill_cameras_response),
                  (Score, '~/score', score_job, fill_score_response),
                  (GetFeatures, '~/features', features_job,
                   partial(fill_features_response, features=serving.features)),
                  (Ground, '~/ground', ground_job,
                   partial(fill_ground_response, points=serving.points)))
        self._services = [node.create_service(kind, name, partial(self._serve, make, fill),
                                              qos_profile=REQUESTS_QOS, callback_group=group)
                          for kind, name, make, fill in served]
        self._destroy_service = node.destroy_service
        self._orphans = Orphans(action_clients(node, '~/generate_plan'))
        self._action = action_server(
            node, GeneratePlan, '~/generate_plan', group, execute_callback=self._execute,
            goal_callback=self._on_goal, handle_accepted_callback=self._on_accepted,
            cancel_callback=self._on_cancel)
        steady_timer(node, CLIENT_CHECK_PERIOD, self._every_period, group)

    def busy(self) -> bool:
        """Tell whether a query or goal still waits for its answer to be sent."""
        with self._lock:
            queries = bool(self._queries)
        return queries or self._goals.busy()

    def destroy(self) -> None:
        """Destroy the services and the action server (when the node is destroyed)."""
        self._action.destroy()
        for service in self._services:
            self._destroy_service(service)

    # Query -----------------------------------------------------------------------------

    async def _serve(self, make: Callable, fill: Callable, request, response):
        """Submit the request's job, then await its answer without holding an executor thread."""
        return await self._answer(make(request), response, fill)

    async def _answer(self, job: Union[Job, str], response, fill: Callable):
        """Submit job and await its outcome as an rclpy Future; fill the response with it.

        A str job is the reason the request is refused (service_jobs.py): answered at once.
        """
        if isinstance(job, str):
            response.success, response.message = False, job
            return response
        worker = self._worker()
        if worker is None:
            response.success, response.message = False, self._not_ready() or 'not active'
            return response
        answered = Future(executor=self._executor())
        # Future.set_result wakes the executor only through a done callback (rclpy then
        # schedules it); a woken executor resumes every waiting coroutine, this one too.
        answered.add_done_callback(lambda _: None)
        job.done = answered.set_result
        with self._lock:
            self._queries[id(job)] = _Query(job, answered,
                                            time.monotonic() + self._answer_timeout())
        try:
            worker.submit(job)
            outcome = await answered
        finally:
            with self._lock:
                self._queries.pop(id(job), None)
        if outcome is None:
            response.success, response.message = False, 'no answer in time'
            return response
        self._record(outcome)
        if job.task in ('vqa', 'ground') and outcome.status == Status.OK and \
                not job.features_only and not job.candidates:  # a score has no answer text
            # A query's AnswerConfidence, a ~/ground answer's detections, just before it
            self._serving.companions(outcome, None)
        return fill(response, outcome)

    def _expire_queries(self) -> None:
        """Cancel the job of a query past its deadline; give up on it CANCEL_GRACE later."""
        now = time.monotonic()
        with self._lock:
            late = [query for query in self._queries.values() if now > query.deadline]
        for query in late:
            if not query.cancelled:
                query.cancelled = True
                cancel_job(self._worker(), query.job,
                           f'no answer within {self._answer_timeout():g} s')
            elif now > query.deadline + CANCEL_GRACE and not query.answered.done():
                query.answered.set_result(None)

    # GeneratePlan (accepted/execute) ---------------------------------------------------

    def _on_goal(self, goal) -> GoalResponse:
        """Refuse goals while not active: a rejected goal tells its client at once."""
        return GoalResponse.ACCEPT if self._worker() is not None else GoalResponse.REJECT

    def _on_accepted(self, goal_handle) -> None:
        goal = goal_handle.request
        pieces = []

        def feedback(text):
            pieces.append(text)
            goal_handle.publish_feedback(GeneratePlan.Feedback(partial_text=''.join(pieces),
                                                               tokens=len(pieces)))

        def answered(outcome):
            record[1] = outcome
            execute_goal(goal_handle)

        job = Job('plan', goal.instruction.strip(), done=answered, on_text=feedback,
                  image_msg=goal.image if goal.image.width else None)
        # The job has them: the goal, kept after it ends (RESULT_TIMEOUT), does not.
        goal.image, goal.instruction = Image(), ''
        record = [job, None]
        worker = self._worker()
        if not self._goals.enter(goal_handle, record):
            answered(Outcome(job, Status.CANCELLED, CANCELLED_BY_CLIENT))
        elif worker is None:  # deactivated between the goal's acceptance and now
            answered(Outcome(job, Status.CANCELLED, self._not_ready() or 'not active'))
        else:
            worker.submit(job)

    def _on_cancel(self, goal_handle) -> CancelResponse:
        accept, record = self._goals.cancel(goal_handle)
        if record is not None:
            cancel_job(self._worker(), record[0], CANCELLED_BY_CLIENT)
        return CancelResponse.ACCEPT if accept else CancelResponse.REJECT

    def _every_period(self) -> None:
        self._expire_queries()
        self._cancel_orphaned_goals()

    def _cancel_orphaned_goals(self) -> None:
        """Cancel the running and queued goals once no action client is left on the graph."""
        worker = self._worker()
        waiting = [job for job, outcome in self._goals.records() if outcome is None]
        for job in self._orphans.look(waiting, lambda job: job.received):
            cancel_job(worker, job, CLIENT_GONE)

    def _execute(self, goal_handle):
        """Turn the worker's outcome into the result; runs once the goal has its answer."""
        (_, outcome), cancelled = self._goals.finish(goal_handle)
        self._record(outcome)
        result = GeneratePlan.Result()
        result.plan = plan_msg(outcome, self._serving.model_name(), self._serving.header())
        self._serving.companions(outcome, result.plan)
        if outcome.status == Status.CANCELLED and cancelled:
            goal_handle.canceled()
        elif outcome.status == Status.OK:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

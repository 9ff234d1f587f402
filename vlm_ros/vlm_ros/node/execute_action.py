"""The ~/execute_plan action: an instruction planned, then executed step by step by the head.

For callers that prefer an action to topics (a behaviour tree, a mission executive): the goal
is planned by the worker like an instruction, then executed by the node's PlanRunner; every
PlanProgress of its execution is the goal's feedback, and the last one its result. It uses the
accepted/execute pattern, like ~/generate_plan: no executor thread waits for the robot.
"""

from collections.abc import Callable
from typing import Optional

from rclpy.action import CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup

from vlm_ros_msgs.action import ExecutePlan
from vlm_ros_msgs.msg import PlanProgress

from ..compat import execute_goal, steady_timer
from .goal_book import CLIENT_CHECK_PERIOD, CLIENT_GONE, GoalBook, Orphans, action_clients
from .jobs import Job, Outcome, Status
from .messages import plan_msg
from .plan_execution import PlanExecution
from .requests import CANCELLED_BY_CLIENT, Serving, action_server
from .scheduler import cancel_job


class _Goal:
    """One goal: its planning job, then the plan_id it executes, then its result."""

    def __init__(self, handle, job: Job):
        self.handle, self.job = handle, job
        self.plan_id = ''
        self.result = None  # the final PlanProgress


class ExecutePlanServer:
    """The node's ~/execute_plan action server (exists in every lifecycle state).

    ``node`` only creates the action server; goals are planned through ``serving`` (as
    ~/generate_plan's are) and executed by ``execution()``, the node's PlanExecution from
    configure to cleanup (None otherwise).
    """

    def __init__(self, node, serving: Serving,
                 execution: Callable[[], Optional[PlanExecution]]):
        self._serving = serving
        self._execution = execution
        self._goals = GoalBook()  # records: _Goal
        group = ReentrantCallbackGroup()
        self._server = action_server(
            node, ExecutePlan, '~/execute_plan', group, execute_callback=self._execute,
            goal_callback=self._on_goal, handle_accepted_callback=self._on_accepted,
            cancel_callback=self._on_cancel)
        # A supervisor (behaviour tree) that died leaves no one to stop the robot's plan.
        self._orphans = Orphans(action_clients(node, '~/execute_plan'))
        steady_timer(node, CLIENT_CHECK_PERIOD, self._end_orphaned_goals, group)

    def busy(self) -> bool:
        """Tell whether a goal still waits for its result to be sent."""
        return self._goals.busy()

    def destroy(self) -> None:
        """Destroy the action server (with the node)."""
        self._server.destroy()

    def _on_goal(self, goal) -> GoalResponse:
        active = self._serving.worker() is not None and self._execution() is not None
        return GoalResponse.ACCEPT if active else GoalResponse.REJECT

    def _on_accepted(self, handle) -> None:
        goal = _Goal(handle, Job('plan', handle.request.instruction.strip(), done=None))
        handle.request.instruction = ''  # the job has it: the goal is kept after it ends
        goal.job.done = lambda outcome: self._planned(goal, outcome)
        worker = self._serving.worker()
        if not self._goals.enter(handle, goal):  # answered as the worker answers a cancel
            self._planned(goal, Outcome(goal.job, Status.CANCELLED, CANCELLED_BY_CLIENT))
        elif worker is None:
            self._finish(goal, PlanProgress.STATE_PREEMPTED,
                         self._serving.not_ready() or 'not active')
        else:
            worker.submit(goal.job)

    def _planned(self, goal: _Goal, outcome) -> None:
        """Execute the goal's plan; one that is not executed ends the goal with the reason."""
        serving = self._serving
        serving.record(outcome)
        plan = plan_msg(outcome, serving.model_name(), serving.header())
        execution = self._execution()
        if execution is None:
            self._finish(goal, PlanProgress.STATE_PREEMPTED, 'the node stopped before it '
                         'could execute')
            return
        goal.plan_id = plan.request_id
        execution.watch(plan.request_id, lambda progress: self._progress(goal, progress))
        execution.execute(plan, outcome)

    def _progress(self, goal: _Goal, progress: PlanProgress) -> None:
        goal.handle.publish_feedback(ExecutePlan.Feedback(progress=progress))
        if progress.state != PlanProgress.STATE_EXECUTING:
            goal.result = progress
            execute_goal(goal.handle)

    def _finish(self, goal: _Goal, state: int, message: str) -> None:
        goal.result = PlanProgress(state=state, instruction=goal.job.text, message=message,
                                   plan_id=goal.job.request_id)
        execute_goal(goal.handle)

    def _on_cancel(self, handle) -> CancelResponse:
        accept, goal = self._goals.cancel(handle)
        if goal is not None:
            self._stop(goal, CANCELLED_BY_CLIENT)
        return CancelResponse.ACCEPT if accept else CancelResponse.REJECT

    def _end_orphaned_goals(self) -> None:
        """Stop the goals, planning or executing, once no action client is left on the graph."""
        pending = [goal for goal in self._goals.records() if goal.result is None]
        for goal in self._orphans.look(pending, lambda goal: goal.job.received):
            self._stop(goal, CLIENT_GONE)

    def _stop(self, goal: _Goal, reason: str) -> None:
        """Preempt the goal's plan if it executes, else cancel its planning job."""
        execution = self._execution()
        if goal.plan_id and execution is not None:
            execution.preempt(goal.plan_id, reason)
        else:
            cancel_job(self._serving.worker(), goal.job, reason)

    def _execute(self, handle):
        """Return the final PlanProgress; runs once the goal's execution has ended."""
        goal, cancelled = self._goals.finish(handle)
        result = goal.result
        if result.state == PlanProgress.STATE_DONE:
            handle.succeed()
        elif result.state == PlanProgress.STATE_PREEMPTED and cancelled:
            handle.canceled()
        else:
            handle.abort()
        return ExecutePlan.Result(progress=result)

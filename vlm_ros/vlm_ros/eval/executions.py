"""Plan executions in a recording of vlm_node's answers: steps commanded, re-plans, outcomes.

With execute_plans (or ~/execute_plan goals) the node publishes a PlanProgress on every change
of an execution. Recorded with the Plans, they tell per instruction which steps went to the
VLA head in which order, how each step ended, why and after how long, why it re-planned, and
how the execution ended; vlm_eval --recorded puts them in summary.json and the report.
"""

from collections import Counter

from ..bag.storage import PROGRESS_TYPE
from .messages import read_messages

STATES = {0: 'EXECUTING', 1: 'DONE', 2: 'FAILED', 3: 'PREEMPTED'}


def _close(ex: dict, log_ns: int, outcome: str, reason: str = '') -> None:
    """End the step being executed: its outcome, why, and its time (bag log times)."""
    step, started = ex.pop('_open', (None, None))
    if step is not None:
        step.update(outcome=outcome, reason=reason, time_s=(log_ns - started) / 1e9)


def read_executions(reader) -> list:
    """Return one dict per executed plan_id, in the order their executions started.

    A step's outcome and time come from the message that follows its command: the next step
    (succeeded), a re-plan (failed, with the re-plan's reason), or the end of the execution.
    Its time is that of the recorder's clock between the two, so it includes the head's work
    and the time the messages took to arrive; a step the recording ends in stays 'running'.
    """
    connections = [c for c in reader.connections if c.msgtype == PROGRESS_TYPE]
    if not connections:  # reader.messages([]) would read every message
        return []
    executions = {}
    for _, log_ns, msg in read_messages(reader, connections):
        ex = executions.setdefault(msg.plan_id, {
            'plan_id': msg.plan_id, 'instruction': msg.instruction, 'steps': [],
            'replans': [], 'outcome': 'EXECUTING', 'message': '', 'done': []})
        state = STATES.get(msg.state, f'UNKNOWN_{msg.state}')
        if state != 'EXECUTING':
            ex.update(outcome=state, message=msg.message, done=list(msg.done))
            done = state == 'DONE'
            _close(ex, log_ns, 'succeeded' if done else state.lower(), '' if done else msg.message)
        elif msg.message.startswith('re-plan'):
            ex['replans'].append(msg.message)
            _close(ex, log_ns, 'failed', msg.message.partition(': ')[2] or msg.message)
        elif msg.index < len(msg.steps):
            _close(ex, log_ns, 'succeeded')
            step = {'attempt': msg.attempt, 'index': msg.index,
                    'instruction': msg.steps[msg.index].instruction, 'outcome': 'running',
                    'reason': '', 'time_s': None}
            ex['steps'].append(step)
            ex['_open'] = (step, log_ns)
    for ex in executions.values():
        ex.pop('_open', None)
    return list(executions.values())


def execution_summary(executions: list) -> dict:
    """Return the summary's counts: executions by outcome, and re-plans in all."""
    if not executions:
        return {}
    return {'executions': dict(sorted(Counter(e['outcome'] for e in executions).items())),
            'replans': sum(len(e['replans']) for e in executions)}

"""Plan executions in a recording of vlm_node's answers: steps commanded, re-plans, outcomes.

With execute_plans (or ~/execute_plan goals) the node publishes a PlanProgress on every change
of an execution. Recorded with the Plans, they tell per instruction which steps went to the
VLA head in which order, why it re-planned, and how it ended; vlm_eval --recorded puts them in
summary.json and the report.
"""

from collections import Counter

from ..bag.storage import PROGRESS_TYPE

STATES = {0: 'EXECUTING', 1: 'DONE', 2: 'FAILED', 3: 'PREEMPTED'}


def read_executions(reader) -> list:
    """Return one dict per executed plan_id, in the order their executions started."""
    connections = [c for c in reader.connections if c.msgtype == PROGRESS_TYPE]
    if not connections:  # reader.messages([]) would read every message
        return []
    executions = {}
    for connection, _, raw in reader.messages(connections):
        msg = reader.deserialize(raw, connection.msgtype)
        ex = executions.setdefault(msg.plan_id, {
            'plan_id': msg.plan_id, 'instruction': msg.instruction, 'steps': [],
            'replans': [], 'outcome': 'EXECUTING', 'message': '', 'done': []})
        state = STATES.get(msg.state, f'UNKNOWN_{msg.state}')
        if state != 'EXECUTING':
            ex.update(outcome=state, message=msg.message, done=list(msg.done))
        elif msg.message.startswith('re-plan'):
            ex['replans'].append(msg.message)
        elif msg.index < len(msg.steps):
            ex['steps'].append({'attempt': msg.attempt, 'index': msg.index,
                                'instruction': msg.steps[msg.index].instruction})
    return list(executions.values())


def execution_summary(executions: list) -> dict:
    """Return the summary's counts: executions by outcome, and re-plans in all."""
    if not executions:
        return {}
    return {'executions': dict(sorted(Counter(e['outcome'] for e in executions).items())),
            'replans': sum(len(e['replans']) for e in executions)}

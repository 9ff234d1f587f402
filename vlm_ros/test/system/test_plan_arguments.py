"""plan_arguments and step_arguments: the skills' arguments of every Plan and StepCommand.

With skills that name arguments ('place(object, location)'), every step of a constrained plan
carries them; the released Plan and StepCommand keep their type hashes, so the arguments come
just before them on topics of their own, joined by request_id, or (plan_id, attempt, index).
While no skill names an argument, nothing is published there.
"""

import json

from engine_fixtures import TARGETS
from loop_harness import Loop
from node_harness import RELIABLE, TIMEOUT, goal_plan, set_ok
from sse_server import ScriptedServer

from vlm_ros_msgs.msg import Plan, PlanArguments, StepArguments

SKILLS = ['pick(object)', 'place(object, location)', 'push']
NAMES = {'pick': ['object'], 'place': ['object', 'location'], 'push': []}


def _check(arguments: PlanArguments, plan: Plan) -> None:
    assert arguments.header == plan.header and len(arguments.steps) == len(plan.steps) > 0
    for step, args in zip(plan.steps, arguments.steps, strict=True):
        assert args.names == NAMES[step.skill], (step, args)
        assert len(args.values) == len(args.names)


def test_every_plan_carries_its_arguments_while_a_skill_names_them(start_vlm_node, test_node):
    node = start_vlm_node()
    node.wait_state('active')
    arguments = test_node.collect(PlanArguments, '/plan_arguments', RELIABLE)
    node.wait_outputs(arguments)  # else a plan's arguments could be missed, not left out
    free = node.plan_on_a_new_frame(TARGETS['plan'][0], 'a plan without skills')

    set_ok(test_node, skills=SKILLS)
    plan = node.plan_on_a_new_frame(TARGETS['plan'][0], 'a plan in the skills')
    # Pushed off what it was trained to write (no arguments), the model may write until its
    # budget runs out, and the plan grammar then closes the plan.
    assert plan.status == Plan.STATUS_OK and plan.form in (
        Plan.FORM_CONSTRAINED, Plan.FORM_CONSTRAINED_CLOSED), plan
    _check(arguments.wait_for(lambda a: a.request_id == plan.request_id, TIMEOUT,
                              "the plan's arguments"), plan)
    result = goal_plan(test_node, TARGETS['plan'][0])
    _check(arguments.wait_for(lambda a: a.request_id == result.request_id, TIMEOUT,
                              "the goal's plan's arguments"), result)

    set_ok(test_node, skills=['pick', 'place'])  # no arguments: none published
    plain = node.plan_on_a_new_frame(TARGETS['plan'][0], 'a plan in skills without arguments')
    set_ok(test_node, skills=SKILLS)
    last = node.plan_on_a_new_frame(TARGETS['plan'][0], 'a plan in the skills again')
    # The last plan's arguments come after any of the earlier plans, from the same publisher.
    arguments.wait_for(lambda a: a.request_id == last.request_id, TIMEOUT, 'its arguments')
    sent = {a.request_id for a in arguments.items()}
    assert free.request_id not in sent and plain.request_id not in sent


def test_each_step_command_has_its_arguments_first(start_vlm_node, test_node):
    """Only a plan the model wrote whole is executed: a server writes one in the skills.

    The tiny model, trained on plans without arguments, writes on in these skills until the
    plan grammar closes the plan (test above), and such a plan is not executed.
    """
    steps = [{'instruction': 'pick up the red block', 'skill': 'pick', 'target': 'red block',
              'args': {'object': 'red block'}},
             {'instruction': 'place it in the bin', 'skill': 'place', 'target': 'bin',
              'args': {'object': 'red block', 'location': 'bin'}}]
    with ScriptedServer() as server:
        server.play(lambda reply: reply.piece(json.dumps({'steps': steps})) and reply.finish())
        node = start_vlm_node(execute_plans=True, skills=SKILLS, backend='openai',
                              base_url=server.base_url, model=server.model)
        node.wait_state('active')
        loop = Loop(node, test_node)
        step_arguments = test_node.collect(StepArguments, '/step_arguments', RELIABLE)
        node.wait_outputs(loop.steps, step_arguments)
        loop.camera('red')
        plan = loop.instruct(TARGETS['plan'][0])
        assert (plan.status, plan.form) == (Plan.STATUS_OK, Plan.FORM_CONSTRAINED), plan
        command = loop.step(plan.request_id, 0)
        args = step_arguments.wait_for(
            lambda a: (a.plan_id, a.attempt, a.index) == (plan.request_id, 0, 0), TIMEOUT,
            "the first step's arguments")
    assert args.header == command.header and args.arguments.names == NAMES[command.skill]
    assert list(args.arguments.values) == ['red block'], args

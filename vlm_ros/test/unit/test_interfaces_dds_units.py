"""vlm_ros_msgs pass between two real processes over real DDS (Fast DDS)."""


from vlm_ros_msgs.msg import Caption, Plan
from vlm_ros_msgs.srv import Query

# Interface contract v1, as released: v2 (closed-loop plans) only adds; these never change.
V1_FIELDS = {
    'Plan': {'header': 'std_msgs/Header', 'request_id': 'string', 'instruction': 'string',
             'status': 'uint8', 'message': 'string', 'steps': 'sequence<vlm_ros_msgs/PlanStep>',
             'form': 'string', 'text': 'string', 'model': 'string',
             'time_to_first_token': 'float', 'total_time': 'float', 'output_tokens': 'uint32'},
    'Caption': {'header': 'std_msgs/Header', 'text': 'string', 'model': 'string',
                'total_time': 'float'},
    'PlanStep': {'instruction': 'string', 'skill': 'string', 'target': 'string'},
    'Query_Request': {'question': 'string', 'image': 'sensor_msgs/Image',
                      'max_new_tokens': 'uint32'},
    'Query_Response': {'success': 'boolean', 'message': 'string', 'answer': 'string',
                       'image_header': 'std_msgs/Header'},
    'GeneratePlan_Goal': {'instruction': 'string', 'image': 'sensor_msgs/Image'},
    'GeneratePlan_Result': {'plan': 'vlm_ros_msgs/Plan'},
    'GeneratePlan_Feedback': {'partial_text': 'string', 'tokens': 'uint32'},
}


def test_v1_fields_keep_their_names_and_types():
    from vlm_ros_msgs.action import GeneratePlan
    from vlm_ros_msgs.msg import PlanStep

    types = (Plan, Caption, PlanStep, Query.Request, Query.Response, GeneratePlan.Goal,
             GeneratePlan.Result, GeneratePlan.Feedback)
    assert {t.__name__: t.get_fields_and_field_types() for t in types} == V1_FIELDS


def test_closed_loop_constants_are_named():
    from vlm_ros_msgs.msg import PlanProgress, StepFeedback

    assert (StepFeedback.STATUS_RUNNING, StepFeedback.STATUS_SUCCEEDED,
            StepFeedback.STATUS_FAILED) == (0, 1, 2)
    assert (PlanProgress.STATE_EXECUTING, PlanProgress.STATE_DONE, PlanProgress.STATE_FAILED,
            PlanProgress.STATE_PREEMPTED) == (0, 1, 2, 3)

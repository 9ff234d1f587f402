"""vlm_node tells the truth about its readiness and serves any number of waiting queries.

It recovers through the lifecycle services alone and refuses parameters it does not have.
Each system test runs the installed vlm_node in its own process and talks to it over DDS, as
an operator's tools would (the lifecycle, parameter, query and action services).
"""


from vlm_ros.node.params import unknown_parameters


def test_unknown_parameters_are_named_with_the_nearest_valid_name():
    reason = unknown_parameters(['modle', 'max_new_token', 'use_sim_time', 'frobnicate',
                                 'qos_overrides./plan.publisher.depth', 'caption_rate'])
    assert "'modle' (did you mean 'model'?)" in reason
    assert "'max_new_token' (did you mean 'max_new_tokens'?)" in reason
    assert "'frobnicate'" in reason and 'did you mean' not in reason.split("'frobnicate'")[1][:3]
    for known in ('use_sim_time', 'qos_overrides', 'caption_rate'):
        assert known not in reason.replace("'max_new_tokens'", '').replace("'model'", '')
    assert unknown_parameters(['model', 'use_sim_time', 'start_type_description_service']) \
        is None

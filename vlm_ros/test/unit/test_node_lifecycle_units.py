"""vlm_node's lifecycle, run-time parameter validation, and signals."""


from vlm_ros.node.params import processor_kwargs, validate


def test_processor_kwargs_must_be_a_json_object():
    assert validate('processor_kwargs', '') is None
    assert validate('processor_kwargs', '{"do_image_splitting": false}') is None
    assert 'not valid JSON' in validate('processor_kwargs', '{do_image_splitting: no}')
    assert 'JSON object' in validate('processor_kwargs', '[1, 2]')
    assert processor_kwargs(' ') == {} and processor_kwargs('{"a": 1}') == {'a': 1}

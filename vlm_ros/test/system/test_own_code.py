"""A model with Python code of its own runs only where it is trusted: vlm_node and the tools.

The loader refuses such a model and says how to trust it: vlm_node's trust_remote_code:=true,
the tools' --trust-remote-code. Trusted, each runs the trained tiny LLaVA behind classes of its
own (engine_fixtures.OWN_CODE) to what the same weights give without them.
"""

import json

import numpy as np
import pytest
from engine_fixtures import PLAN_JSON, TARGETS, scene
from eval_bags import COLOURS
from fork_server import run_tool
from node_harness import call, node_executable
from reference_features import engine_features
from test_evaluate import read_jsonl
from test_export import write_bag
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.node.image_conversion import rgb_to_image

from vlm_ros_msgs.srv import Query

ADVICE = "holds Python code of its own (auto_map in its configuration), which runs only where " \
    "it is trusted: vlm_node's trust_remote_code:=true, the tools' --trust-remote-code; read it"


def test_vlm_node_configures_it_with_trust_remote_code_only(start_vlm_node, test_node,
                                                            own_code_llava):
    untrusted = start_vlm_node(model=str(own_code_llava))
    untrusted.wait_configure_failed(ADVICE)
    untrusted.stop()
    start_vlm_node(model=str(own_code_llava), trust_remote_code=True).wait_state('active')
    answer = call(test_node, Query, '/vlm_node/query', Query.Request(
        question=TARGETS['vqa'][0], image=rgb_to_image(scene('blue'))))
    assert answer.success and answer.answer == TARGETS['vqa'][1], answer.message


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """Write the vlm_export tests' recording: red, blue and green frames, and /cmd_vel."""
    return write_bag(tmp_path_factory.mktemp('own_code') / 'bag')


def refused_then_trusted(tool: str, *args):
    """Run tool without --trust-remote-code (refused: exit 2), then with it; return that run."""
    exe = node_executable(tool)
    refused = run_tool([exe, *args], 600)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-3000:]
    assert lines[0].startswith(f'{tool}: ') and ADVICE in lines[0], lines
    done = run_tool([exe, *args, '--trust-remote-code'], 600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_vlm_eval_answers_as_the_trained_weights(bag, own_code_llava, tmp_path):
    out = tmp_path / 'out'
    refused_then_trusted('vlm_eval', bag, '--model', own_code_llava, '--instruction',
                         TARGETS['plan'][0], '--out', out)
    records = read_jsonl(out / 'results.jsonl')
    assert json.loads((out / 'summary.json').read_text())['decoding'] == 'eager'  # auto, CPU
    assert sorted((r['task'], r['status'], r['text'], r['image']['frame']) for r in records) == [
        ('caption', 'OK', TARGETS['caption'][1], 0), ('plan', 'OK', PLAN_JSON, 0)]


def test_vlm_export_pairs_the_features_of_the_trained_weights(bag, own_code_llava,
                                                              trained_tiny, tmp_path):
    out = tmp_path / 'dataset'
    refused_then_trusted('vlm_export', bag, '--model', own_code_llava, '--actions', '/cmd_vel',
                         '--instruction', TARGETS['plan'][0], '--out', out)
    data = np.load(out / 'dataset.npz')
    assert data['actions'][:, 0].tolist() == [0.25, -0.75]  # frames 0 and 2 (test_export.py)
    asked = [(scene(colour), TARGETS['plan'][0]) for colour in (COLOURS[0], COLOURS[2])]
    np.testing.assert_allclose(data['features'], engine_features(
        trained_tiny('llava'), asked, FeatureSpec(-1, 'last')), atol=1e-4)


def test_vlm_benchmark_measures_it(own_code_llava):
    done = refused_then_trusted('vlm_benchmark', '--model', own_code_llava, '--repeats', 1,
                                '--batch-sizes', 1, '--new-tokens', 4)
    assert f'### {own_code_llava}: ' in done.stdout, done.stdout
    assert '\n| 1 | 4 | ' in done.stdout, done.stdout  # batch 1, exactly 4 new tokens

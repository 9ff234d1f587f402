"""Which DDS transport a vlm_ros process takes, and what a camera whose frames are lost is told.

Fast DDS's default shared-memory segments are 512 KB; every process vlm_ros starts takes
config/fastdds_large_frames.xml unless the user chose a transport (system/test_large_frames.py
sends such frames between processes). Decided and worded without DDS here.
"""

import os

from vlm_ros.node.image_input import lost_hint, transport_fix
from vlm_ros.transport import (
    PROFILE,
    large_frames_profile,
    large_frames_transport,
    profile_variable,
)


def test_the_large_frames_profile_is_chosen_unless_the_user_chose_a_transport(tmp_path):
    installed = large_frames_profile()
    assert os.path.isfile(installed) and installed.endswith(f'/config/{PROFILE}')
    for default in ({}, {'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp'}):
        environ = dict(default)
        said = large_frames_transport(environ, str(tmp_path))
        assert environ == {**default, profile_variable(): installed}
        assert said == f'DDS profile {PROFILE} (via {profile_variable()})'
    for chosen in ({'FASTDDS_DEFAULT_PROFILES_FILE': ''},  # empty: Fast DDS's own transports
                   {'FASTRTPS_DEFAULT_PROFILES_FILE': '/robot/dds.xml'},
                   {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}):
        environ = dict(chosen)
        said = large_frames_transport(environ, str(tmp_path))
        assert environ == chosen, said
    (tmp_path / 'DEFAULT_FASTDDS_PROFILES.xml').write_text('<profiles/>')
    environ = {}
    assert large_frames_transport(environ, str(tmp_path)) == \
        'DDS profile DEFAULT_FASTDDS_PROFILES.xml (in the working directory)' and environ == {}


def test_the_hint_names_the_publishers_and_the_fix_for_their_driver():
    fix = transport_fix('rmw_fastrtps_cpp')
    assert fix == f'{profile_variable()}={large_frames_profile()}'
    assert transport_fix('rmw_cyclonedds_cpp') == ''
    said = lost_hint({'/image': {'/camera/driver'}}, fix)
    assert said.startswith('/image (/camera/driver) has a publisher, but no frame has arrived '
                           'since the node subscribed')
    assert "; if its frames are over 512 KB, Fast DDS's default transport loses most of them" \
        in said
    assert said.endswith(f'start the camera driver with {fix}')
    both = lost_hint({'/image': {'/b', '/a'}, '/image/compressed': {'/a'}}, '')
    assert both == ('/image (/a, /b), /image/compressed (/a) have publishers, but no frame has '
                    'arrived since the node subscribed: what is published is lost on the way')
    # A best-effort publisher and a reliable subscription never match: that, and no guess.
    unmatched = lost_hint({'/image': {'/camera/driver'}}, fix, ('/image (/camera/driver)',))
    assert unmatched.endswith(': /image (/camera/driver) publishes best effort, which a reliable '
                              'subscription never receives; set image_reliability:=best_effort')

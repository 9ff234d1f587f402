"""Install the vlm_ros Python package, its launch and config files, and its executables."""

import glob
import pathlib
import xml.etree.ElementTree as ElementTree

from setuptools import find_packages, setup

PACKAGE = 'vlm_ros'
HERE = pathlib.Path(__file__).resolve().parent
# package.xml holds the one version number; setup.py reads it instead of repeating it.
VERSION = ElementTree.parse(HERE / 'package.xml').findtext('version')

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(exclude=['test']),
    package_data={PACKAGE: ['engine/*.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob.glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob.glob('config/*.yaml') + glob.glob('config/*.xml')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='vlm_ros maintainers',
    maintainer_email='maintainers@vlm-ros.dev',
    description='ROS 2 node for vision-language models: captions, visual answers, plans.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'vlm_node = vlm_ros.node.node:main',
            'vlm_client = vlm_ros.tools.client:main',
            'vlm_benchmark = vlm_ros.benchmarks.engine_speed:main',
            'vlm_replay = vlm_ros.tools.replay:main',
            'vlm_eval = vlm_ros.tools.evaluate:main',
            'vlm_export = vlm_ros.tools.export:main',
            'vlm_train_head = vlm_ros.tools.train_head:main',
            'vlm_action_head = vlm_ros.tools.action_head:main',
            'scripted_vla_head = vlm_ros.tools.scripted_vla_head:main',
        ],
    },
)

"""Packaging of msdnet-tf: the package list (metadata and console programs: pyproject.toml).

The configs live at the top of the repository (``configs/``, where the commands in the README
name them) and ship inside the package as ``msdnet_tf.configs``, so that an installed
``msdnet-train --config digits`` finds them by name.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["msdnet_tf", "msdnet_tf.*", "gradcam_tf", "gradcam_tf.*"])
    + ["msdnet_tf.configs"],
    package_dir={"msdnet_tf.configs": "configs"},
)

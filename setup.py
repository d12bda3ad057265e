"""Packaging for msdnet-tf: MSD-Net on Keras 3 / TensorFlow, with Grad-CAM for every exit.

Which TensorFlow wheel gets installed is chosen by the environment variable
``MSDNET_TF_TENSORFLOW`` at install time (see README, "Choosing the TensorFlow wheel"):

* unset or ``tensorflow-cpu`` (default): the CPU-only wheel, smaller and what CI and the demo use;
* ``tensorflow``: the standard wheel (CPU, or GPU when the CUDA libraries are already present);
* ``tensorflow[and-cuda]``: the standard wheel plus NVIDIA's CUDA/cuDNN wheels;
* ``none``: require nothing, keep the TensorFlow that is already installed (containers, conda).
"""

import os
import re

from setuptools import find_packages, setup

TF_VERSION = ">=2.16,<2.22"
_TF_CHOICES = ("tensorflow-cpu", "tensorflow", "tensorflow[and-cuda]", "none")


def _tensorflow_requirement():
    choice = os.environ.get("MSDNET_TF_TENSORFLOW", "tensorflow-cpu").strip()
    if choice not in _TF_CHOICES:
        raise SystemExit(
            f"MSDNET_TF_TENSORFLOW must be one of {', '.join(_TF_CHOICES)}. Received: {choice!r}"
        )
    return [] if choice == "none" else [choice + TF_VERSION]


def _version():
    text = open(os.path.join("msdnet_tf", "__init__.py"), encoding="utf-8").read()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


setup(
    name="msdnet-tf",
    version=_version(),
    description="MSD-Net (multi-scale dense networks) for anytime classification on Keras 3, "
    "with Grad-CAM for every exit",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["msdnet_tf", "msdnet_tf.*", "gradcam_tf", "gradcam_tf.*"]),
    
    install_requires=_tensorflow_requirement()
    + [
        "keras>=3.3",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "opencv-python-headless>=4.9",
        "absl-py>=2.0",
        "ml-collections>=0.1.1",
        "scikit-learn>=1.3",
        "scipy>=1.11",
        "pillow>=10",
        "tqdm>=4.66",
        "tensorboard>=2.16",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3", "ruff>=0.6", "tf-keras-vis==0.8.7"],
        "torch": ["torch>=2.1"],
    },
)

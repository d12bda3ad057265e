"""``python -m msdnet_tf``: the versions (``--version``) and the list of programs.

    python -m msdnet_tf --version

prints the versions of msdnet-tf, TensorFlow, Keras and Python (read from the installed
packages; TensorFlow is not imported). The programs themselves are ``msdnet-train``,
``msdnet-evaluate``, ... (`msdnet_tf.cli`).
"""

from __future__ import annotations

import argparse
import sys

from msdnet_tf.versions import format_versions

__all__ = ["main"]

_PROGRAMS = ("msdnet-train", "msdnet-evaluate", "msdnet-visualize", "msdnet-export",
             "msdnet-convert", "msdnet-summarize", "msdnet-demo")  # fmt: skip


def main(argv=None) -> int:
    """Prints the versions with ``--version``, else what the package's programs are.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status (0; a bad argument exits with status 2 through argparse).
    """
    parser = argparse.ArgumentParser(
        prog="python -m msdnet_tf",
        description="MSD-Net on Keras 3. The programs: " + ", ".join(_PROGRAMS) + " (--help).",
    )
    parser.add_argument(
        "--version", action="store_true", help="print msdnet-tf's, TensorFlow's and Keras' versions"
    )
    args = parser.parse_args(argv)
    if args.version:
        print(format_versions())
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""msdnet-demo from a source checkout (`make demo`): see `msdnet_tf.cli.demo`.

python scripts/demo.py --workdir runs/digits_demo
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: C++ INFO lines

from msdnet_tf.cli.demo import main  # noqa: E402

if __name__ == "__main__":
    main()

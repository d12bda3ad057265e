"""What each exit looks at: Grad-CAM grids, per-class pages, saliency, class models, HTML."""

from msdnet_tf.visualize.pages import *  # noqa: F403

"""The shipped configs, installed as ``msdnet_tf.configs``; name one with ``--config NAME``.

Each module has ``get_config(arg=None)`` (ml_collections); its docstring gives the command and
what the run should produce.
"""

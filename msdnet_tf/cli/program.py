"""What every msdnet-tf program shares: config by name, one-line errors, quiet and debug flags.

Each program (``msdnet-train``, ``msdnet-evaluate``, ...) is an absl program whose ``main()``
calls `run`. Then:

* ``--config digits`` (or ``digits:smoke``) names a config shipped with the package
  (``msdnet_tf.configs``, the repository's ``configs/`` folder); a path works as well;
* a user error (missing or corrupt data, a missing run file, a bad flag value, an unwritable
  output folder, a model that does not fit the data) prints one line,
  ``msdnet-<program>: error: <what was wrong and what to do>``, and exits with status 2;
  ``--debug`` shows the traceback instead;
* ``--quiet`` turns progress bars off (they are on by default; `progress` tells).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
import traceback

# Before TensorFlow loads (the programs import it after this module): its C++ INFO lines would
# bury a program's output. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

__all__ = [
    "USER_ERRORS",
    "check_writable",
    "define_integer_list",
    "define_run_flags",
    "define_choice_list",
    "integers",
    "config_names",
    "config_path",
    "progress",
    "run",
]

_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of an error, not one line.")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bars; print only the results.")

# Errors that mean "the input was wrong", not "the program is wrong".
USER_ERRORS = (OSError, ValueError, app.UsageError)


def config_names() -> list[str]:
    """The names of the configs shipped with msdnet-tf (``digits``, ``cifar10_anytime``...)."""
    folder = _config_folder()
    if folder is None:
        return []
    return sorted(
        name[:-3] for name in os.listdir(folder) if name.endswith(".py") and name[0] != "_"
    )


def _config_folder() -> str | None:
    spec = importlib.util.find_spec("msdnet_tf.configs")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    # A source checkout run without installing: configs/ beside the package.
    here = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    return os.path.normpath(here) if os.path.isdir(here) else None


def config_path(value: str) -> str:
    """A ``--config`` value as a file path: a shipped config's name, or a path as it is.

    ``name:arg`` keeps its argument (``digits:smoke``).

    Raises:
        ValueError: neither a file nor a shipped config's name (lists the names, closest first).
    """
    path, colon, arg = value.partition(":")
    if os.path.isfile(path):
        return value
    names = config_names()
    if path in names:
        return os.path.join(_config_folder(), path + ".py") + colon + arg
    close = difflib.get_close_matches(path, names, n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    raise ValueError(
        f"--config must be a config file or the name of a shipped config ({', '.join(names)}). "
        f"{hint}Received: --config={value}"
    )


def _resolve_config_argv(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = config_path(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + config_path(arg[len("--config=") :])
    return out


def _fail(prog: str, message: str) -> None:
    first = " ".join(str(message).split())
    sys.stderr.write(f"{prog}: error: {first}\n")
    sys.exit(2)


def _parser(prog: str):
    def parse(argv):
        debug = "--debug" in argv
        try:
            return flags.FLAGS(_resolve_config_argv(argv))
        except (flags.Error, AttributeError, KeyError, *USER_ERRORS) as error:
            if debug:
                raise
            if isinstance(error, (AttributeError, KeyError)):  # a --config.x of no field
                cause = error.args[0] if error.args else error
                while isinstance(cause, (AttributeError, KeyError)) and cause.args:
                    cause = cause.args[0]
                field = str(cause).split("\n")[0].strip("'\"")
                hint = str(cause).split("\n")[-1] if "\n" in str(cause) else ""
                error = f"a --config.* flag names no config field ('{field}'). {hint}"
            _fail(prog, f"{error} (--help lists the flags)")

    return parse


def define_run_flags():
    """The flags naming what a program reads: ``--checkpoint``, ``--data``, ``--data_dir``.

    Returns:
        (checkpoint, data, data_dir) flag holders.
    """
    from msdnet_tf.data import DATASETS

    checkpoint = flags.DEFINE_string(
        "checkpoint", "model.keras", "Which checkpoint of a run folder (model.keras, best.keras)."
    )
    data = flags.DEFINE_enum(
        "data", None, list(DATASETS),
        "The data set of a lone .keras model (a run folder's own otherwise).",
    )  # fmt: skip
    data_dir = flags.DEFINE_string(
        "data_dir", None, "Where CIFAR archives / ImageNet folders are (default: the run's)."
    )
    return checkpoint, data, data_dir


def define_integer_list(name: str, default, help: str, minimum: int = 0):
    """A comma-separated list of integers >= `minimum`, checked when the flags are parsed.

    Returns:
        The flag holder; ``integers(holder.value)`` gives the ints (or None).
    """
    holder = flags.DEFINE_list(name, default, help)

    def valid(values):
        return values is None or all(_is_int(v) and int(v) >= minimum for v in values)

    flags.register_validator(
        name, valid, f"--{name} must be integers >= {minimum} separated by commas"
    )
    return holder


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def define_choice_list(name: str, default, choices, help: str):
    """A comma-separated list of values from `choices`, checked when the flags are parsed."""
    holder = flags.DEFINE_list(name, default, f"{help} Of: {','.join(choices)}.")
    flags.register_validator(
        name,
        lambda values: values is None or set(values) <= set(choices),
        f"--{name} must be values of {','.join(choices)} separated by commas",
    )
    return holder


def integers(values) -> list[int] | None:
    """The ints of a `define_integer_list` flag's value (None stays None)."""
    return None if values is None else [int(v) for v in values]


def progress() -> bool:
    """Whether progress bars are on (not ``--quiet``)."""
    return not _QUIET.value


def check_writable(folder: str, flag: str) -> str:
    """Creates `folder` if needed and checks that files can be written there, before any work.

    Raises:
        PermissionError: the folder cannot be created or written (names the flag).
    """
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as error:
        raise PermissionError(
            f"Cannot write into {folder} ({error.strerror or error}); choose another {flag}. "
            f"Received: {flag}={folder}"
        ) from None
    return folder


def run(main, prog: str) -> None:
    """Runs `main(argv)` as the program `prog`, with one-line user errors (exit status 2)."""

    def guarded(argv):
        try:
            return main(argv)
        except USER_ERRORS as error:
            if _DEBUG.value:
                traceback.print_exc()
                sys.exit(2)
            _fail(prog, f"{error}")

    app.run(guarded, flags_parser=_parser(prog))

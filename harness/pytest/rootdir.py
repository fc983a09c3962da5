"""Make ``pytest -m accuracy --imagenet /data/imagenet`` run exactly as ``--imagenet=/data/imagenet`` does.

pytest decides its rootdir and ini-file (``Config.parse`` -> ``determine_setup``) from the
positional arguments *before* any plugin but its own built-ins has added options. The value of an
option pytest does not know yet (``--imagenet /data/imagenet``) is then taken for a test path: the
rootdir becomes the data folder (or the common ancestor of the repository and the data), no
ini-file is read, so pyproject's ``addopts``, ``testpaths`` and ``junit_family`` are silently
dropped, and node ids change (pytest-dev/pytest#906, #1471, #8846: a known limitation). Loading
the plugin as a ``pytest11`` entry point makes the option known to the final parse, but the setup
was already decided by then.

So, once the plugin is loaded (entry points load after ``determine_setup`` but before the initial
conftests), :func:`reroot` asks ``determine_setup`` again with the arguments as they parse *now*
that the plugin's options are known. When the answer differs, it replaces the rootdir, ini-file
and ini values, swaps the wrong ini-file's ``addopts`` for the right one's, re-parses the early
namespace and re-derives ``confcutdir``: everything ``Config.parse`` derived from the setup before
the initial conftests load. Nothing else has read them yet. Under pytest-xdist every worker parses
the same arguments and gets the same answer.

This touches private attributes of ``pytest.Config`` (``_rootpath``, ``_inipath``, ``_inicfg``,
``_inicache``, ``_parser``); :func:`reroot` checks they exist and otherwise stops with a
:class:`pytest.UsageError` that names the workaround (``--option=value``), never a silently wrong
setup. tests/test_readme_commands.py runs every documented command both ways.
"""

from __future__ import annotations

import copy

import pytest
from _pytest.config.findpaths import determine_setup

_PRIVATE = ("_rootpath", "_inipath", "_inicfg", "_inicache", "_parser")


def reroot(config: pytest.Config, args: list[str]) -> bool:
    """Redo pytest's rootdir/ini-file choice now that the plugin's options are known.

    ``args`` is the argument list ``Config.parse`` works on (ini ``addopts`` and ``PYTEST_ADDOPTS``
    already prepended); it is edited in place, as pytest's own parse does. Returns whether the
    setup changed.
    """
    parser = config._parser
    ns = parser.parse_known_args(args, namespace=copy.copy(config.option))
    rootpath, inipath, inicfg, _ignored = determine_setup(
        inifile=ns.inifilename,
        override_ini=ns.override_ini,
        args=ns.file_or_dir,
        rootdir_cmd_arg=ns.rootdir or None,
        invocation_dir=config.invocation_params.dir,
    )
    if rootpath == config.rootpath and inipath == config.inipath:
        return False
    missing = [name for name in _PRIVATE if not hasattr(config, name)]
    if missing:
        raise pytest.UsageError(
            f"pytest took an option's value for a test path (rootdir {config.rootpath}, expected {rootpath}) and this "
            f"pytest {pytest.__version__} lacks {missing} to correct it: write the option as --option=value "
            "(e.g. --imagenet=/data/imagenet), or give the test folder too "
            "(pytest acceptance --imagenet /data/imagenet)"
        )
    wrong_addopts = [str(a) for a in config.getini("addopts")]
    if wrong_addopts and args[: len(wrong_addopts)] == wrong_addopts:
        del args[: len(wrong_addopts)]
    config._rootpath = rootpath
    config._inipath = inipath
    config._inicfg = inicfg
    config._inicache.clear()
    parser.extra_info["rootdir"] = str(rootpath)
    parser.extra_info["inifile"] = str(inipath)
    args[:0] = [str(a) for a in config.getini("addopts")]
    config.known_args_namespace = parser.parse_known_args(args, namespace=copy.copy(config.option))
    if config.known_args_namespace.confcutdir is None:  # not given: derived from the setup, as pytest does
        config.known_args_namespace.confcutdir = str(inipath.parent if inipath is not None else rootpath)
    return True


"""setup.cfg lists every package folder (it cannot use `find:` for plugins/), and every listed
plugin entry point loads."""
import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _listed_packages() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return {p.strip() for p in cfg["options"]["packages"].split("\n") if p.strip()}


def test_every_package_folder_is_listed():
    found = set()
    for top, name in (("vnnx", "vnnx"), ("plugins", "vnnx_plugins")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            found.add(".".join((name,) + rel.parts))
    assert found - _listed_packages() == set(), "add these to setup.cfg [options] packages"


def test_plugins_load():
    from vnnx.registry import discover

    plugins, failures = discover()
    assert failures == [], failures
    assert {"capm", "relu-stability", "vnn-lp"} <= {p.name for p in plugins}

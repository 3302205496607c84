"""The C JSON parser for python-ovs, when the installed ``ovs`` package was built without it.

python-ovs parses every OVSDB message (the initial dump of a database, each update) with
``ovs._json`` when that extension is importable, else with a pure-Python parser some 65 times
slower (1.2 s per MB on the lab machine). The PyPI ``ovs`` sdist builds the extension only where
OVS's headers are installed, so a pip-installed venv usually lacks it, while the distribution's
``python3-openvswitch`` ships it. At 10,000 pods the NB dump is ~12 MB: ~15 s of a restart's
resync went to parsing it in Python, plus every update of a cold start.

:func:`use_c_parser` loads the distribution's extension into the installed package when the
package has none and the extension was built for this interpreter, checks it parses a sample
exactly like the Python parser, and switches python-ovs to it. Anything unexpected leaves the
Python parser in place.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

#: Where distributions install python-ovs (Debian/Ubuntu; Fedora/RHEL).
SYSTEM_PACKAGE_DIRS = ("/usr/lib/python3/dist-packages/ovs", "/usr/lib64/python3/site-packages/ovs",
                       f"/usr/lib64/python{sys.version_info.major}.{sys.version_info.minor}/site-packages/ovs",
                       f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages/ovs")

_SAMPLE = ('{"id":7,"result":{"Logical_Switch_Port":{"6f1c3c6e-2b1a-4c9e-9d1e-5a3b2c1d0e0f":{"initial":'
           '{"name":"ns_p\\u00e9","addresses":["0a:58:0a:80:00:05 10.128.0.5"],"tag":["set",[]],'
           '"options":["map",[["iface-id-ver","x"]]],"enabled":true,"up":false,"n":-1.5e3}}}},"error":null}')


def _parse(parser_class: type, text: str) -> object:
    parser = parser_class()
    parser.feed(text)
    return parser.finish()


def use_c_parser(package_dirs: tuple[str, ...] = SYSTEM_PACKAGE_DIRS) -> str:
    """Make python-ovs parse with the C extension if possible; returns which parser is in use."""
    import ovs
    import ovs.json

    if ovs.json.PARSER == ovs.json.PARSER_C:
        return "C"
    for directory in package_dirs:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(directory) / f"_json{suffix}"
            if not path.is_file():
                continue
            try:
                spec = importlib.util.spec_from_file_location("ovs._json", path)
                if spec is None or spec.loader is None:
                    continue
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                if _parse(module.Parser, _SAMPLE) != _parse(ovs.json.Parser, _SAMPLE):
                    logger.info("python-ovs: %s parses differently; keeping the Python JSON parser", path)
                    continue
            except Exception as exc:  # an extension of another build: keep the Python parser
                logger.info("python-ovs: cannot use %s (%s); keeping the Python JSON parser", path, exc)
                continue
            sys.modules["ovs._json"] = module
            ovs._json = module
            # ovs.json refers to the extension as ``ovs._json`` through a global ``ovs`` that only
            # its own (failed) ``import ovs._json`` would have bound.
            ovs.json.ovs = ovs
            ovs.json.PARSER = ovs.json.PARSER_C
            logger.info("python-ovs: parsing OVSDB messages with the C parser from %s", path)
            return "C"
    logger.info("python-ovs: no C JSON parser available; OVSDB messages are parsed in Python (slower)")
    return "Python"

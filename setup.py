"""Map the root folders onto the ``ovnk`` import package.

``core/``, ``plugins/`` and ``cni/`` live at the repository root but are
installed as ``ovnk.core``, ``ovnk.plugins`` and ``ovnk.cni`` so nothing lands
as a bare top-level ``core`` in site-packages. setuptools' ``packages.find``
cannot prefix discovered names, hence this small file; everything else is in
pyproject.toml.
"""

from setuptools import find_packages
from setuptools import setup

ROOTS = {"ovnk.core": "core", "ovnk.plugins": "plugins", "ovnk.cni": "cni"}

packages = ["ovnk"]
package_dir = {"ovnk": "ovnk"}
for name, folder in ROOTS.items():
    packages.append(name)
    package_dir[name] = folder
    packages.extend(f"{name}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=package_dir)

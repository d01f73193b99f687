"""Installs cbserver: the package, its twistd plugin, SQL, prompts and web assets."""

from pathlib import Path

from setuptools import find_packages, setup


def _data_files():
    """Map every file under sql/ and prompts/ to share/cbserver/<same relative folder>."""
    out = {}
    for top in ("sql", "prompts", "scripts/sipp"):
        for f in sorted(Path(top).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                out.setdefault(str(Path("share/cbserver") / f.parent), []).append(str(f))
    return sorted(out.items())


setup(
    name="cbserver",
    version="0.1.0",
    description="A WEB callback server for VoIP operators, on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["cbserver", "cbserver.*"]) + ["twisted.plugins"],
    include_package_data=True,
    package_data={"cbserver": ["data/*.toml", "web/templates/*", "web/static/*",
                               "web/console/templates/*", "web/console/static/*",
                               "web/console/static/vendor/*", "web/console/static/vendor/*/*"]},
    # sql/, prompts/ and scripts/sipp/ stay top-level folders of the checkout; an install copies them to
    # <prefix>/share/cbserver/, where cbserver.resources finds them.
    data_files=_data_files(),
    install_requires=[
        "twisted[tls]>=23.8",
        "klein>=23.5",
        "txpostgres>=1.7",
        "zope.interface>=6",
        "treq>=23.11",
        "psycopg2-binary>=2.9",
        "prometheus-client>=0.17",
        "Jinja2>=3.1",  # the web pages' templates (autoescaped), cbserver.web.templating
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-twisted>=1.14", "pytest-timeout>=2.2", "hypothesis>=6",
                 "ruff>=0.4", "selenium>=4.10", "openapi-spec-validator>=0.7",
                 # Coverage-guided fuzzing (tests/fuzz, bench/fuzz.py); wheels exist for Linux only.
                 "atheris>=2.3; platform_system == 'Linux'"],
    },
    entry_points={"console_scripts": ["cbserver = cbserver.cli:main"]},
)

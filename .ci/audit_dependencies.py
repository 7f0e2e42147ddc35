"""The dependency audit of .ci/run: pip-audit over the installed environment, failing on any known vulnerability.

pip-audit needs advisory data: PyPI's per-release JSON API (``https://pypi.org/pypi/NAME/VERSION/json``, whose
``vulnerabilities`` come from the PyPA advisory database and OSV) or OSV's own API (``https://api.osv.dev``). This
script asks each for one known release first and audits with the first that answers. Where neither does, the audit
cannot be done, and it says so on one line and exits 0: measured on this project's own CI machines, which reach the
package indexes only (the per-release JSON API answers 404 there, https://api.osv.dev does not answer, and no
package of the registries they reach carries current advisory data). What holds there instead is only the floors in
pyproject.toml, set above the advisories known when they were written (the comment above its dependencies).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from importlib.metadata import version

TIMEOUT_S = 20


def pypi_answers() -> str | None:
    """None when PyPI's per-release JSON API gives advisories, else why not."""
    url = f"https://pypi.org/pypi/pip/{version('pip')}/json"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{url}: {getattr(exc, 'code', None) or getattr(exc, 'reason', None) or exc}"
    return None if "vulnerabilities" in body else f"{url}: no vulnerabilities field"


def osv_answers() -> str | None:
    """None when OSV's API answers a query, else why not."""
    url = "https://api.osv.dev/v1/query"
    query = json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"}, "version": version("pip")}).encode()
    request = urllib.request.Request(url, data=query, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{url}: {getattr(exc, 'code', None) or getattr(exc, 'reason', None) or exc}"
    return None


def main() -> int:
    failures = []
    for service, probe in (("pypi", pypi_answers), ("osv", osv_answers)):
        why = probe()
        if why is None:
            command = ["pip-audit", "--vulnerability-service", service, "--skip-editable", "--progress-spinner", "off"]
            print(f"dependency audit: {' '.join(command)}", flush=True)
            return subprocess.run(command).returncode
        failures.append(why)
    print(
        "dependency audit skipped: no advisory data can be reached from here ("
        + "; ".join(failures)
        + "); only the advisory floors of pyproject.toml hold",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

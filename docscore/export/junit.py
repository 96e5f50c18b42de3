"""``docscore verify --junit-xml``: the verify report as a JUnit XML file, so CI shows parity like a test suite.

One ``<testcase classname="docscore.verify.<variant>" name="<check>">`` per variant and check (``hashes``,
``parity``, ``invariance``), and ``classname="docscore.verify.bundle"`` for the bundle-wide checks (``manifest``,
``files``, ``checkpoint_spec``). A failed check carries ``<failure>``, a check that was not run ``<skipped>``; where
a result was read from the manifest rather than re-run, ``<system-out>`` says so. Torch-free.
"""

from __future__ import annotations

import os
import socket
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from docscore.export.verify import BUNDLE_CHECKS, VARIANT_CHECKS

SUITE = "docscore.verify"


def _cases(report: dict):
    """``(classname, name, check)`` for every check in the report, bundle first, then variants in order."""
    for name in BUNDLE_CHECKS:
        if name in report.get("checks", {}):
            yield f"{SUITE}.bundle", name, report["checks"][name]
    for variant, v in report.get("variants", {}).items():
        for name in VARIANT_CHECKS:
            if name in v.get("checks", {}):
                yield f"{SUITE}.{variant}", name, v["checks"][name]


def junit_xml(report: dict, error: str | None = None) -> ET.ElementTree:
    """The JUnit tree for a verify report; ``error`` is the verify error, kept as the suite's ``<system-err>``."""
    cases = list(_cases(report))
    count = {s: sum(c["status"] == s for _, _, c in cases) for s in ("failed", "skipped")}
    total = sum(c.get("seconds", 0.0) for _, _, c in cases)
    attrs = {"tests": str(len(cases)), "failures": str(count["failed"]), "errors": "0",
             "skipped": str(count["skipped"]), "time": f"{total:.3f}"}
    root = ET.Element("testsuites", name="docscore verify", **attrs)
    suite = ET.SubElement(root, "testsuite", name=SUITE, **attrs, hostname=socket.gethostname(),
                          timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    props = ET.SubElement(suite, "properties")
    for key in ("bundle", "checkpoint"):
        if report.get(key):
            ET.SubElement(props, "property", name=key, value=str(report[key]))
    for classname, name, check in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{check.get('seconds', 0.0):.3f}")
        message = check.get("message", "")
        if check["status"] == "failed":
            ET.SubElement(case, "failure", message=message[:1000], type="docscore.verify").text = message
        elif check["status"] == "skipped":
            ET.SubElement(case, "skipped", message=message[:1000])
        elif message:
            ET.SubElement(case, "system-out").text = f"{check.get('source', '')}: {message}"
    if error:
        ET.SubElement(suite, "system-err").text = error
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit_xml(report: dict, path: str | os.PathLike, error: str | None = None) -> Path:
    """Write the report atomically (a CI step reading a half-written file would see a broken suite)."""
    import io

    from docscore.storage import write_bytes

    path = Path(path)
    buf = io.BytesIO()
    junit_xml(report, error).write(buf, encoding="utf-8", xml_declaration=True)
    write_bytes(None, path, buf.getvalue())
    return path

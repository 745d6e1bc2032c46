"""What every benchmark prints about the machine it ran on, and how it reports (imported by the scripts in bench/)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def machine(packages: tuple[str, ...] = ("torch", "transformers", "tokenizers", "fugashi", "numpy")) -> str:
    """CPU count and model, OS, Python and the versions of ``packages`` that are installed, on one line."""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    versions = []
    for package in packages:
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}; {platform.platform()}; "
            f"Python {platform.python_version()}; {', '.join(versions)}")


def report(lines: list[str], markdown: str | None) -> None:
    """Print the result table (markdown lines) and, with ``--markdown PATH``, write it there for BENCHMARKS.md."""
    text = "\n".join(lines) + "\n"
    print(text)
    if markdown:
        Path(markdown).write_text(text, encoding="utf-8")

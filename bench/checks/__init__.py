"""The checks, in the order a run performs them: params, flops, filesize, data-config, accuracy, throughput."""
from __future__ import annotations

from types import ModuleType

from . import accuracy, data_config, filesize, flops, params, throughput
from .base import (ERROR, FAIL, FAILING, INFO, PASS, REGRESSION, SKIP, CheckError, CheckResult, Context, Settings,
                   SkipCheck)

CHECKS: dict[str, ModuleType] = {m.NAME: m for m in (params, flops, filesize, data_config, accuracy, throughput)}

__all__ = ["CHECKS", "ERROR", "FAIL", "FAILING", "INFO", "PASS", "REGRESSION", "SKIP", "CheckError", "CheckResult",
           "Context", "Settings", "SkipCheck"]

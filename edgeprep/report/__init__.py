"""The run report: build it from stage results, validate it against the JSON Schema, write JSON and Markdown."""

from edgeprep.report.build import (
                                   SCHEMA_PATH,
                                   SCHEMA_VERSION,
                                   artifact_entry,
                                   artifact_status,
                                   build_report,
                                   exit_ok,
                                   load_report,
                                   summary_of,
                                   target_entry,
                                   validate,
)
from edgeprep.report.markdown import markdown_summary
from edgeprep.report.write import write_report

__all__ = ["SCHEMA_VERSION", "SCHEMA_PATH", "build_report", "artifact_entry", "artifact_status", "exit_ok",
           "load_report", "summary_of", "validate", "markdown_summary", "target_entry", "write_report"]

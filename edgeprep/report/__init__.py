"""The run report: build it from stage results, validate it against the JSON Schema, write JSON and Markdown."""

from edgeprep.report.build import (
                                   SCHEMA_PATH,
                                   SCHEMA_VERSION,
                                   artifact_entry,
                                   build_report,
                                   load_report,
                                   target_entry,
                                   validate,
)
from edgeprep.report.markdown import markdown_summary
from edgeprep.report.write import write_report

__all__ = ["SCHEMA_VERSION", "SCHEMA_PATH", "build_report", "artifact_entry", "load_report", "validate",
           "markdown_summary", "target_entry", "write_report"]

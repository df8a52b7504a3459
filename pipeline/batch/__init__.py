"""The weekly batch: resumable, parallel scoring of a folder or manifest, and the report for QA leads.
Entry points: `runner.run_batch` (with `runner.BatchError`), `weekly.write_weekly_report`."""

"""Review: the results store, trainers' web app, verdicts and human scores, clip export and privacy masking.
Entry points: `store.Store`, `webapp.create_app`, `verdicts.export_corrections` / `read_human_scores`, `clips.export_clips`, `privacy.load_privacy`."""

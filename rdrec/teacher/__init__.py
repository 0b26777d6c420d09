"""Teacher rationales: prompt families, generation backends, parsing with retries, the crash-safe rationale
store and its export to 🤗 datasets (docs/architecture.md). The entry point is ``rdrec-generate`` (``rdrec.cli.generate``);
the Lightning module that shards generation is ``rdrec.teacher.module.TeacherModule``."""

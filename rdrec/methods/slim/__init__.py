"""SLIM (Wang et al., WWW 2024): a teacher LLM reasons step by step over a user's history; a small LM student
learns that reasoning (LoRA); the student's rationales, encoded by a sentence encoder, are fused into an ID-based
sequential recommender or matched on their own (ID-agnostic). ``strategy=slim_student`` trains the student;
``strategy=slim|slim_teacher|slim_item_text|slim_backbone|slim_agnostic`` the recommenders.

The leak rule (``windows.py``, ``fusion.py``): each rationale was written from a window of the user's training
sequence, and is fused only at training positions whose target lies *after* that window (0-based target index
>= the window's end); at validation/test every rationale (all written from training history) is usable, and
the user's latest is used. Several rationales per user (several exports, written from different prefixes)
are allowed: each training position sees the latest one written before its target. The rule is the same for
teacher and student rationales and for ID-based fusion and ID-agnostic matching. A rationale from the default
SlimFamily prompt (the latest training items) is therefore fused at evaluation only; a rationale from a prefix
(``experiments/slim/run.py teacher --exclude-last k``, recorded in the export's ``meta.json`` as
``slim_window.exclude_last``) also trains the fusion layer on the last k training targets.

Files:
- ``distill_data.py``   ``SlimDistillDataModule``: (simplified prompt → teacher rationale) pairs from an export
- ``student_module.py`` ``SlimStudentModule``: the LoRA student (token NLL on the rationale only)
- ``texts.py``          item texts from the training view, user rationales from an export, their cached vectors
- ``text_encoder.py``   ``TextEncoder``: the sentence encoder (shipped all-MiniLM-L6-v2)
- ``windows.py``        where each exported rationale's history window ends (the leak rule)
- ``rec_data.py``       ``SlimRecDataModule``: sequential batches (with each window's end) plus text vectors
- ``fusion.py``         ``SlimFusion`` (ID-based) and ``SlimMatching`` (ID-agnostic), plain ``nn.Module``s
- ``rec_module.py``     ``SlimRecModule``: the recommender's Lightning module
"""

"""SLIM (Wang et al., WWW 2024): a teacher LLM reasons step by step over a user's history; a small LM student
learns that reasoning (LoRA); the student's rationales, encoded by a sentence encoder, are fused into an ID-based
sequential recommender or matched on their own (ID-agnostic). ``strategy=slim_student`` trains the student;
``strategy=slim|slim_teacher|slim_item_text|slim_backbone|slim_agnostic`` the recommenders.

Files:
- ``distill_data.py``   ``SlimDistillDataModule``: (simplified prompt → teacher rationale) pairs from an export
- ``student_module.py`` ``SlimStudentModule``: the LoRA student (token NLL on the rationale only)
- ``texts.py``          item texts from the training view, user rationales from an export, their cached vectors
- ``text_encoder.py``   ``TextEncoder``: the sentence encoder (shipped all-MiniLM-L6-v2)
- ``rec_data.py``       ``SlimRecDataModule``: sequential batches plus user and item text vectors
- ``fusion.py``         ``SlimFusion`` (ID-based) and ``SlimMatching`` (ID-agnostic), plain ``nn.Module``s
- ``rec_module.py``     ``SlimRecModule``: the recommender's Lightning module
"""

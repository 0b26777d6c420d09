"""DELRec (Zhang et al., ICDE 2025): distil a trained sequential recommender's behaviour into a block of soft-prompt
vectors of a frozen LLM (stage 1: Temporal Analysis and Recommendation Pattern Simulating), then fine-tune the LLM
with AdaLoRA, soft prompt frozen, to pick the next item among K shown candidates (stage 2).
``strategy=delrec_stage1`` / ``strategy=delrec``, both reading a finished ``strategy=sr`` run (``delrec.sr_run``).

Files:
- ``sr_model.py``     read a finished SR run (config, best checkpoint, top-k) and predict top-k lists
- ``candidates.py``   the K-item lists: the SR model's top items plus random items, seeded, persisted
- ``prompts.py``      the recommendation, TA and RPS prompt texts with the soft-prompt slot
- ``datamodule.py``   ``DelRecDataModule``: prompt batches for both stages
- ``soft_prompt.py``  ``SoftPromptLM``: soft-prompt vectors spliced into a Hugging Face LM (plain ``nn.Module``)
- ``scoring.py``      ``PromptCodec`` and the exact whole-title candidate log-likelihood
- ``module.py``       ``DelRecBase`` and ``DelRecModule`` (stage 2, AdaLoRA)
- ``stage1.py``       ``DelRecStage1Module`` (stage 1, dynamic task weighting)
- ``artifacts.py``    load the stage-1 soft prompt from its run's checkpoint
"""

"""RDRec (Wang et al., ACL 2024) and POD (Li et al., CIKM 2023): a T5 student with per-task soft prompts and
whole-word embeddings, trained on mixed text tasks (sequential and top-N recommendation, explanation, and for RDRec
the teacher's user-preference and item-attribute rationales), evaluated by constrained beam search over item IDs
and by the exact log-likelihood of candidate IDs. ``strategy=pod`` / ``strategy=rdrec``.

Files:
- ``tasks.py``         the text-to-text tasks built from the training view, their mixture and tokenisation
- ``datamodule.py``    ``RDRecDataModule``: task batches for training, encoded evaluation batches
- ``pod.py``           ``PODStudent``: T5 + soft prompts + whole-word embeddings (a plain ``nn.Module``)
- ``item_ids.py``      item identifier schemes (random, sequential, independent, collaborative, semantic), built
                       from the training view and cached by the split's fingerprint (``item_ids=…``)
- ``trie.py``          ``ItemTrie``: the prefix trie of item-ID token sequences for constrained decoding, with
                       per-row bans (the user's seen items)
- ``text_metrics.py``  BLEU-4 / ROUGE of the generated text tasks
- ``module.py``        ``RDRecStudentModule``: the Lightning module (training, beam search, candidate scoring)
"""

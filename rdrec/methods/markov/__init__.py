"""A first-order Markov chain: score every item by how often it followed the user's last item in the training
sequences, popularity breaking ties. No learning rate, no epochs: the counts are the model. It is the reference
row for "the next item is a function of the last one" and the worked example of ``docs/adding-a-method.md``
(the smallest real method: a plain model, a Lightning module, a strategy config and a planted-signal test).
``strategy=markov``.

Files:
- ``chain.py``   ``TransitionCounts``: sparse item→next-item counts from training sequences (no Lightning, no files)
- ``module.py``  ``MarkovModule``: builds the counts from the training view, scores through the shared evaluator
"""

"""Benchmark-side workaround for rdrec's Caser on real data (used only if rdrec/models/caser.py is not fixed yet).

rdrec's user ids are 1..num_users (0 is padding), but ``rdrec.models.caser.Caser`` sizes its user table
``nn.Embedding(num_users, d)``, so the last user's id is out of range (IndexError on ml-100k). This subclass only
passes ``num_users + 1``; everything else is rdrec's Caser. Selected with
``seqrec._target_=bench_caser.Caser`` (run.py names such runs ``rdrec_caser-userfix_…``).
"""

from rdrec.models.caser import Caser as _Caser


class Caser(_Caser):
    def __init__(self, *args, num_users: int, **kwargs):
        super().__init__(*args, num_users=num_users + 1, **kwargs)

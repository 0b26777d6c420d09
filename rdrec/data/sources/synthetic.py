"""A seeded, self-contained dataset that looks like an Amazon category, for tests and quick runs.

Items fall into a few latent clusters (a category with its own brands and product nouns). Each user has a
home cluster; the next item is, with high probability, the *successor* of the previous item inside its
cluster (a learnable sequential rule), otherwise another item of the same cluster, otherwise any item. A user
never repeats an item. Every interaction gets a rating and, if ``with_reviews``, a review that names the
item's title — so leakage tests can find test-item text in training inputs. With ``ties`` some consecutive
interactions share a timestamp (at least one does), to exercise tie-breaking by original order.

Same arguments → byte-identical dataset; there are no files, the fingerprint is ``config()``.
"""

from __future__ import annotations

import random

import pandas as pd

from rdrec.data.canonical import CanonicalDataset
from rdrec.data.sources.base import Source

CLUSTERS = [
    ("Beauty", "Skin Care", ["Lumera", "Dewbloom", "Aquavelle"], ["Moisturizer", "Serum", "Cleanser", "Toner", "Night Cream"]),
    ("Beauty", "Hair Care", ["Silkroot", "Maneline", "Curlcraft"], ["Shampoo", "Conditioner", "Hair Oil", "Styling Gel", "Hair Mask"]),
    ("Video Games", "Strategy", ["Ironkeep", "Hexforge", "Polaris Studios"], ["Empire Builder", "Tactics Saga", "Siege Commander", "Colony Planner"]),
    ("Video Games", "Racing", ["Turbobyte", "Apex Motion", "Driftline"], ["Rally Championship", "Street Racer", "Kart Mayhem", "Circuit Legends"]),
    ("Grocery & Gourmet Food", "Coffee & Tea", ["Highland Roast", "Teaberry", "Morning Ritual"], ["Espresso Beans", "Green Tea", "Cold Brew Blend", "Chai Latte Mix"]),
    ("Home & Kitchen", "Cookware", ["Castwell", "Panterra", "Chefline"], ["Skillet", "Dutch Oven", "Saucepan", "Wok", "Baking Sheet"]),
]
ADJECTIVES = ["Classic", "Ultra", "Organic", "Deluxe", "Compact", "Advanced", "Gentle", "Pro", "Everyday", "Premium"]
PRAISE = ["works better than I expected", "is exactly what I wanted", "became a favourite right away", "is great value"]
COMPLAINT = ["broke after a week", "did not live up to the description", "was a disappointment", "is overpriced"]
ASPECTS = ["quality", "price", "design", "durability", "packaging", "size"]


class Synthetic(Source):
    def __init__(
        self,
        num_users: int = 50,
        num_items: int = 40,
        min_len: int = 5,
        max_len: int = 15,
        seed: int = 0,
        with_reviews: bool = True,
        ties: bool = False,
        num_clusters: int = 4,
        name: str = "synthetic",
    ):
        if not 1 <= min_len <= max_len <= num_items:
            raise ValueError(f"need 1 <= min_len <= max_len <= num_items, got {min_len}, {max_len}, {num_items}")
        if not 1 <= num_clusters <= len(CLUSTERS):
            raise ValueError(f"num_clusters must be in 1..{len(CLUSTERS)}, got {num_clusters}")
        self.num_users, self.num_items = num_users, num_items
        self.min_len, self.max_len = min_len, max_len
        self.seed, self.with_reviews, self.ties = seed, with_reviews, ties
        self.num_clusters = num_clusters
        self.name = name

    def files(self) -> list:
        return []

    def config(self) -> dict:
        return {
            "num_users": self.num_users, "num_items": self.num_items, "min_len": self.min_len,
            "max_len": self.max_len, "seed": self.seed, "with_reviews": self.with_reviews,
            "ties": self.ties, "num_clusters": self.num_clusters,
        }

    def load(self) -> CanonicalDataset:
        rng = random.Random(self.seed)
        items, clusters = self._items(rng)
        cluster_of = {iid: c for c, members in enumerate(clusters) for iid in members}
        title = dict(zip(items["item_id"], items["title"]))
        rows = []
        for u in range(self.num_users):
            user_id = f"u{u:04d}"
            home = rng.randrange(len(clusters))
            length = rng.randint(self.min_len, self.max_len)
            seq = [rng.choice(clusters[home])]
            while len(seq) < length:
                seq.append(self._next(rng, seq, clusters, cluster_of))
            time = 1_500_000_000 + rng.randrange(0, 86_400 * 365)
            for pos, item in enumerate(seq):
                if pos:
                    tie = self.ties and (rng.random() < 0.25 or (u == 0 and pos == 1))
                    time += 0 if tie else rng.randrange(3_600, 86_400 * 30)
                rating = rng.choices([1, 2, 3, 4, 5], weights=[1, 1, 2, 4, 6])[0]
                review = self._review(rng, title[item], rating) if self.with_reviews else None
                rows.append((user_id, item, float(time), float(rating), review))
        inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "review"])
        users = pd.DataFrame({"user_id": [f"u{u:04d}" for u in range(self.num_users)]})
        return CanonicalDataset(self.name, users, items, inter)

    def _items(self, rng: random.Random) -> tuple[pd.DataFrame, list[list[str]]]:
        chosen = CLUSTERS[: self.num_clusters]
        clusters: list[list[str]] = [[] for _ in chosen]
        rows, seen_titles = [], set()
        for i in range(self.num_items):
            c = i % len(chosen)  # round robin: clusters of (nearly) equal size
            top, sub, brands, nouns = chosen[c]
            brand = rng.choice(brands)
            title = f"{brand} {rng.choice(ADJECTIVES)} {rng.choice(nouns)}"
            if title in seen_titles:  # keep titles unique so a title identifies its item
                title = f"{title} {i}"
            seen_titles.add(title)
            item_id = f"i{i:04d}"
            clusters[c].append(item_id)
            rows.append({
                "item_id": item_id, "title": title, "brand": brand, "categories": [top, sub],
                "description": f"A {sub.lower()} product by {brand}.", "year": rng.randint(2005, 2020),
            })
        return pd.DataFrame(rows), clusters

    @staticmethod
    def _next(rng: random.Random, seq: list[str], clusters: list[list[str]], cluster_of: dict[str, int]) -> str:
        members = clusters[cluster_of[seq[-1]]]
        seen = set(seq)
        draw = rng.random()
        if draw < 0.6:  # the successor rule: what a sequential model should pick up
            successor = members[(members.index(seq[-1]) + 1) % len(members)]
            if successor not in seen:
                return successor
        if draw < 0.85:
            options = [m for m in members if m not in seen]
            if options:
                return rng.choice(options)
        options = [m for c in clusters for m in c if m not in seen]
        return rng.choice(options)

    @staticmethod
    def _review(rng: random.Random, title: str, rating: int) -> str:
        verdict = rng.choice(PRAISE if rating >= 4 else COMPLAINT if rating <= 2 else PRAISE + COMPLAINT)
        aspect = rng.choice(ASPECTS)
        return f"The {title} {verdict}. I mostly care about {aspect}, and the {aspect} here is {'good' if rating >= 3 else 'poor'}."
